"""Provider webhooks. Each is public (providers cannot log in) and proves where it came from
with the provider's signature, checked before anything else; a forgery gets 403 and changes
nothing."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, request
from twilio.request_validator import RequestValidator

from hub import csrf, providers, status
from hub.web import public

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


def _verify_twilio() -> None:
    """X-Twilio-Signature over the public URL Twilio called (HUB_BASE_URL, so the check holds
    behind a proxy that rewrites host or scheme) and the form parameters."""
    rt = current_app.extensions["hub"]
    signature = request.headers.get("X-Twilio-Signature", "")
    url = rt.settings.base_url + request.full_path.rstrip("?")
    validator = RequestValidator(providers.twilio_account(rt).auth_token)
    if not signature or not validator.validate(url, request.form, signature):
        abort(403)


@bp.route("/twilio/status", methods=["POST"])
@public
@csrf.exempt  # signed by Twilio instead
def twilio_status():
    _verify_twilio()
    rt = current_app.extensions["hub"]
    sid = request.form.get("MessageSid") or request.form.get("SmsSid") or ""
    state = request.form.get("MessageStatus") or request.form.get("SmsStatus") or ""
    code = request.form.get("ErrorCode", "")
    if not sid or not state or (code and not code.isdigit()):
        abort(400, "MessageSid and MessageStatus are required; ErrorCode is a number")
    error_code = int(code) if code else None
    with rt.session() as session:
        result = status.apply_twilio_status(
            session, sid, state, error_code, rt.settings.default_locale
        )
    if not result.known:
        status.schedule_retry(rt, sid, state, error_code, 0)
    return "", 204
