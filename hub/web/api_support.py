"""What every /api/v1 operation goes through, in this order: the key (401), its role (403),
a test key's limits (403), the query and the JSON body (400, 415, 422), then, for a POST with an
`Idempotency-Key`, the claim of that key (replaying a stored answer instead of running again).
Errors leave as RFC 9457 application/problem+json. Views only say what they do."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Blueprint, Response, current_app, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

from hub import idempotency
from hub.api_queries import BadCursor, Page, clamp
from hub.apikeys import KeyHolder, key_for_bearer
from hub.models import ApiKeyType, Role
from hub.web import API_KEY_ATTR, roles
from hub.web.api_schemas import FieldError, Problem

PROBLEM_TYPE = "application/problem+json"
log = logging.getLogger(__name__)


class ApiProblem(Exception):
    """An answer other than success; becomes a problem+json response."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers = status, detail, errors, headers


@dataclass(frozen=True)
class Created:
    """A 201 answer: the new thing, and where it lives."""

    body: BaseModel
    location: str


@dataclass(frozen=True)
class Operation:
    method: str
    rule: str
    endpoint: str
    summary: str
    tag: str
    roles: frozenset[str]
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None  # None: 204 No Content
    status: int
    sends: bool  # causes a message to go out: refused to test keys


class Api:
    """The operations of one blueprint; hub.web.api_spec turns them into the OpenAPI document."""

    def __init__(self, bp: Blueprint):
        self.bp = bp
        self.operations: list[Operation] = []

    def operation(
        self,
        method: str,
        rule: str,
        *,
        roles_allowed: tuple[str, ...],
        summary: str,
        tag: str,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        sends: bool = False,
    ) -> Callable[[Callable], Callable]:
        def decorate(view: Callable) -> Callable:
            op = Operation(
                method,
                rule,
                view.__name__,
                summary,
                tag,
                frozenset((*roles_allowed, Role.ADMIN)),
                body,
                query,
                response,
                status,
                sends,
            )

            @wraps(view)
            def endpoint(**path_args):
                return _handle(op, view, path_args)

            endpoint = roles(*op.roles)(endpoint)
            setattr(endpoint, API_KEY_ATTR, True)
            self.bp.add_url_rule(rule, view.__name__, endpoint, methods=[method])
            self.operations.append(op)
            return endpoint

        return decorate


# -- one request -------------------------------------------------------------------------------


def _handle(op: Operation, view: Callable, path_args: dict[str, Any]) -> Response:
    try:
        key = _authorised_key(op)
        args: dict[str, Any] = dict(path_args)
        if op.query is not None:
            args["query"] = _validated(op.query, request.args.to_dict(), status=400)
        if op.body is not None:
            args["body"] = _validated(op.body, _json_body(), status=422)
        idempotency_key = request.headers.get("Idempotency-Key")
        if op.method == "POST" and idempotency_key is not None:
            return _idempotent(op, key, idempotency_key, lambda: _run(op, view, key, args))
        return _run(op, view, key, args)
    except BadCursor as exc:
        return problem_response(
            ApiProblem(400, str(exc), errors=[FieldError(pointer="#/cursor", detail=str(exc))])
        )
    except ApiProblem as problem:
        return problem_response(problem)


def _authorised_key(op: Operation) -> KeyHolder:
    scheme, _sep, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiProblem(
            401,
            _("Send your API key as: Authorization: Bearer <key>."),
            headers={"WWW-Authenticate": 'Bearer realm="api"'},
        )
    key = key_for_bearer(current_app.extensions["hub"], token)
    if key is None:
        raise ApiProblem(
            401,
            _("The API key is not valid, or it has been revoked."),
            headers={"WWW-Authenticate": 'Bearer realm="api", error="invalid_token"'},
        )
    if key.role not in op.roles:
        raise ApiProblem(
            403,
            _(
                "A key with the role %(role)s cannot do this; it needs one of: %(roles)s.",
                role=key.role,
                roles=", ".join(sorted(op.roles)),
            ),
        )
    if op.sends and key.key_type == ApiKeyType.TEST:
        raise ApiProblem(403, _("A test key never causes a message to be sent."))
    return key


def _json_body() -> Any:
    if request.mimetype != "application/json" and not request.mimetype.endswith("+json"):
        raise ApiProblem(415, _("Send the body as JSON, with Content-Type: application/json."))
    try:
        return json.loads(request.get_data(cache=True))
    except (ValueError, UnicodeDecodeError):
        raise ApiProblem(400, _("The body is not valid JSON.")) from None


def _validated(model: type[BaseModel], data: Any, *, status: int) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [FieldError(pointer=_pointer(e["loc"]), detail=_explain(e)) for e in exc.errors()]
        raise ApiProblem(
            status, _("Some values are not valid; see errors."), errors=errors
        ) from None


def _pointer(loc: tuple) -> str:
    return "#" + "".join(f"/{str(part).replace('~', '~0').replace('/', '~1')}" for part in loc)


def _explain(error: dict) -> str:
    """A pydantic error in the hub's words (and language); its own for rare kinds."""
    kind, ctx = error["type"], error.get("ctx", {})
    simple = {
        "missing": _("is required"),
        "extra_forbidden": _("is not a field of this request"),
        "string_type": _("must be text"),
        "int_type": _("must be a whole number"),
        "int_parsing": _("must be a whole number"),
        "bool_type": _("must be true or false"),
        "bool_parsing": _("must be true or false"),
        "list_type": _("must be a list"),
        "dict_type": _("must be an object"),
        "model_type": _("must be an object"),
        "model_attributes_type": _("must be an object"),
        "string_too_short": _("must not be empty"),
        "string_pattern_mismatch": _("contains characters that are not allowed here"),
        "timezone_aware": _("must be a time with its UTC offset, e.g. 2030-05-01T07:30:00+02:00"),
        "datetime_type": _("must be a time with its UTC offset, e.g. 2030-05-01T07:30:00+02:00"),
        "datetime_parsing": _("must be a time with its UTC offset, e.g. 2030-05-01T07:30:00+02:00"),
        "datetime_from_date_parsing": _(
            "must be a time with its UTC offset, e.g. 2030-05-01T07:30:00+02:00"
        ),
    }
    if kind in simple:
        return simple[kind]
    if kind == "literal_error":
        return _("must be one of: %(values)s", values=ctx.get("expected", ""))
    if kind == "string_too_long":
        num = ctx.get("max_length", 0)
        return ngettext(
            "must have at most %(num)d character", "must have at most %(num)d characters", num
        )
    if kind == "too_long":
        num = ctx.get("max_length", 0)
        return ngettext("must have at most %(num)d item", "must have at most %(num)d items", num)
    if kind == "too_short":
        return _("must not be empty")
    if kind in ("greater_than_equal", "less_than_equal"):
        return _("is out of range")
    return error["msg"]


def _run(op: Operation, view: Callable, key: KeyHolder, args: dict[str, Any]) -> Response:
    result = view(key=key, **args)
    if result is None:
        return Response(status=204)
    if isinstance(result, Response):
        return result
    if isinstance(result, Created):
        response = json_response(result.body, 201)
        response.headers["Location"] = result.location
        return response
    return json_response(result, op.status)


def _idempotent(
    op: Operation, key: KeyHolder, idempotency_key: str, run: Callable[[], Response]
) -> Response:
    """Run once per (key, Idempotency-Key); later the stored answer, marked as a replay."""
    rt = current_app.extensions["hub"]
    if not idempotency.valid_key(idempotency_key):
        raise ApiProblem(400, _("The Idempotency-Key must be 1 to 255 visible ASCII characters."))
    fingerprint = idempotency.request_hash(op.method, request.path, request.get_data(cache=True))
    try:
        stored = idempotency.claim(rt, key.id, idempotency_key, fingerprint)
    except idempotency.KeyReused:
        raise ApiProblem(
            422, _("This Idempotency-Key was already used for a different request.")
        ) from None
    except idempotency.StillRunning:
        raise ApiProblem(
            409, _("A request with this Idempotency-Key is still running; try again shortly.")
        ) from None
    if stored is not None:
        return _replay(stored)
    try:
        try:
            response = run()
        except ApiProblem as problem:  # an answer too: a retry gets the same one
            response = problem_response(problem)
    except BaseException:
        idempotency.release(rt, key.id, idempotency_key)
        raise
    if response.status_code >= 500:
        idempotency.release(rt, key.id, idempotency_key)
        return response
    body = response.get_json(silent=True) if response.status_code != 204 else None
    idempotency.store(
        rt,
        key.id,
        idempotency_key,
        idempotency.StoredAnswer(response.status_code, body, response.headers.get("Location")),
    )
    return response


def _replay(stored: idempotency.StoredAnswer) -> Response:
    if stored.body is None:
        response = Response(status=stored.status_code)
    else:
        mimetype = PROBLEM_TYPE if stored.status_code >= 400 else "application/json"
        # Byte for byte as the first answer (pydantic's compact JSON, UTF-8 unescaped).
        body = json.dumps(stored.body, separators=(",", ":"), ensure_ascii=False)
        response = Response(body, stored.status_code, mimetype=mimetype)
    if stored.location:
        response.headers["Location"] = stored.location
    response.headers["Idempotent-Replayed"] = "true"
    return response


# -- answers -----------------------------------------------------------------------------------


def json_response(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status, mimetype="application/json")


def problem_response(problem: ApiProblem) -> Response:
    body = Problem(
        title=_status_title(problem.status),
        status=problem.status,
        detail=problem.detail,
        errors=problem.errors,
    )
    response = Response(body.model_dump_json(exclude_none=True), problem.status)
    response.mimetype = PROBLEM_TYPE
    for name, value in (problem.headers or {}).items():
        response.headers[name] = value
    return response


def _status_title(status: int) -> str:
    titles = {
        400: _("Bad request"),
        401: _("Not authenticated"),
        403: _("Not allowed"),
        404: _("Not found"),
        405: _("Method not allowed"),
        409: _("Conflict"),
        415: _("Unsupported media type"),
        422: _("Unprocessable content"),
        500: _("Internal error"),
    }
    return titles.get(status, str(status))


def http_problem(exc: HTTPException) -> Response:
    """Flask's own HTTP errors (unknown URL, wrong method, body too large) as problems."""
    detail = {
        404: _("There is nothing at this address."),
        405: _("This address does not take the %(method)s method.", method=request.method),
    }.get(exc.code or 500, exc.description or "")
    response = problem_response(ApiProblem(exc.code or 500, detail))
    if exc.code == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def server_problem(exc: Exception) -> Response:
    log.exception("API request failed: %s %s", request.method, request.path)
    return problem_response(
        ApiProblem(500, _("Something went wrong on our side; please try again later."))
    )


# -- lists -------------------------------------------------------------------------------------


def page_response(
    model: type[BaseModel], page: Page, item: Callable[[Any], BaseModel], **path_args
) -> BaseModel:
    """A page with its `next` link (also as a Link header, set by the caller's response)."""
    next_url = None
    if page.next_cursor is not None:
        args = {**request.args.to_dict(), **path_args, "cursor": page.next_cursor}
        args["limit"] = clamp(int(args.get("limit", 0) or 0))
        next_url = url_for(request.endpoint, **args)
    return model(items=[item(x) for x in page.items], next_cursor=page.next_cursor, next=next_url)


def with_link(model: BaseModel) -> Response:
    response = json_response(model)
    next_url = getattr(model, "next", None)
    if next_url:
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return response
