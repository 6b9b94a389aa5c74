"""Provider webhooks. Each is public (providers cannot log in) and proves where it came from
with the provider's signature, checked before anything else; a forgery gets 403 and changes
nothing."""

from __future__ import annotations

import hmac
import json
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, current_app, request
from twilio.request_validator import RequestValidator

from hub import csrf, health, inbound, live, providers, status
from hub.web import public

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


def _verify_twilio(name: str) -> None:
    """X-Twilio-Signature over the public URL Twilio called (HUB_BASE_URL, so the check holds
    behind a proxy that rewrites host or scheme) and the form parameters."""
    rt = current_app.extensions["hub"]
    signature = request.headers.get("X-Twilio-Signature", "")
    url = rt.settings.base_url + request.full_path.rstrip("?")
    validator = RequestValidator(providers.twilio_account(rt).auth_token)
    if not signature or not validator.validate(url, request.form, signature):
        abort(403)
    health.webhook_seen(rt, name)


@bp.route("/twilio/status", methods=["POST"])
@public
@csrf.exempt  # signed by Twilio instead
def twilio_status():
    _verify_twilio("twilio-status")
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
    if result.changed and result.conversation_id is not None:
        live.publish(rt, "status", result.conversation_id, status=state)
    return "", 204


EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


@bp.route("/twilio/sms", methods=["POST"])
@public
@csrf.exempt  # signed by Twilio instead
def twilio_sms():
    """An SMS from a resident: stored, queued, answered with empty TwiML at once (the hub's
    answers, if any, go out through the API like any message)."""
    _verify_twilio("twilio-sms")
    sid = request.form.get("MessageSid") or request.form.get("SmsSid") or ""
    if not sid or not request.form.get("From"):
        abort(400, "MessageSid and From are required")
    # The parameters as Twilio posted them (the body itself was consumed reading the form).
    payload = urlencode(list(request.form.items(multi=True))).encode()
    inbound.accept(current_app.extensions["hub"], "sms", sid, payload)
    return Response(EMPTY_TWIML, mimetype="text/xml")


@bp.route("/telegram", methods=["POST"])
@public
@csrf.exempt  # Telegram proves itself with the secret token set with the webhook
def telegram():
    rt = current_app.extensions["hub"]
    expected = providers.telegram_webhook_secret(rt).encode()
    given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "").encode()
    if not hmac.compare_digest(given, expected):
        abort(403)
    health.webhook_seen(rt, "telegram")
    try:
        update = json.loads(request.get_data())
    except ValueError:
        abort(400, "the body must be JSON")
    if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
        abort(400, "an update needs its update_id")
    inbound.accept(rt, "telegram", str(update["update_id"]), request.get_data())
    return "", 200
