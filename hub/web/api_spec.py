"""The OpenAPI 3.1 document of /api/v1, generated from the registered operations and their
pydantic models (JSON Schema 2020-12, which OpenAPI 3.1 uses as is). Nothing here is written by
hand but the words around it."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from hub.idempotency import MAX_KEY_LENGTH
from hub.web.api_schemas import MAX_ID, Problem
from hub.web.api_support import PROBLEM_TYPE, Api, Operation

REF = "#/components/schemas/{model}"
PATH_PARAM = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
DESCRIPTION = """\
The REST API of Mestni glas: residents, topics, areas, notices, deliveries and conversations.

Authenticate with an API key made by an administrator (`hub api-keys create`), sent as
`Authorization: Bearer <key>`. Each key has a role; each operation lists the roles that may use
it (admin may use all). A `test` key never causes a message to be sent.

A POST may carry an `Idempotency-Key` header: the first answer is kept for 24 hours and
returned again (with `Idempotent-Replayed: true`) for a request with the same key, without doing
anything twice. The same key with a different request is refused with 422.

Lists come in pages: pass `next_cursor` as `cursor` (or follow `next`, also sent as a
`Link: <...>; rel="next"` header) until it is null. Errors are RFC 9457
`application/problem+json`, with `errors` naming each bad field by a JSON pointer."""


def document(api: Api, *, server_url: str, version: str) -> dict[str, Any]:
    schemas, refs = _schemas(api.operations)
    paths: dict[str, dict[str, Any]] = {}
    for op in api.operations:
        path = _openapi_path(api.bp.url_prefix or "", op.rule)
        paths.setdefault(path, {})[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Mestni glas API", "version": version, "description": DESCRIPTION},
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _schemas(operations: list[Operation]) -> tuple[dict, dict]:
    models: list[type[BaseModel]] = [Problem]
    for op in operations:
        models += [m for m in (op.body, op.response) if m is not None and m not in models]
    mode = {op.body: "validation" for op in operations if op.body is not None}
    refs, definitions = models_json_schema(
        [(m, mode.get(m, "serialization")) for m in models], ref_template=REF
    )
    return definitions.get("$defs", {}), {model: ref for (model, _mode), ref in refs.items()}


def _openapi_path(prefix: str, rule: str) -> str:
    return prefix + PATH_PARAM.sub(r"{\2}", rule)


def _operation(op: Operation, refs: dict) -> dict[str, Any]:
    roles = ", ".join(sorted(op.roles))
    spec: dict[str, Any] = {
        "operationId": op.endpoint,
        "summary": op.summary,
        "description": f"Roles: {roles}." + (" Refused to test keys." if op.sends else ""),
        "tags": [op.tag],
        "parameters": _path_parameters(op) + _query_parameters(op) + _headers(op),
        "responses": _responses(op, refs),
    }
    if op.body is not None:
        spec["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[op.body]}},
        }
    return spec


def _path_parameters(op: Operation) -> list[dict]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        }
        for _converter, name in PATH_PARAM.findall(op.rule)
    ]


def _query_parameters(op: Operation) -> list[dict]:
    if op.query is None:
        return []
    schema = op.query.model_json_schema(ref_template=REF)
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "description": prop.pop("description", ""),
            "schema": _not_null(prop),
        }
        for name, prop in schema["properties"].items()
    ]


def _not_null(prop: dict) -> dict:
    """An optional query parameter is left out, never sent as null: drop the null branch."""
    options = [o for o in prop.get("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
        return {**rest, **options[0]}
    return prop


def _headers(op: Operation) -> list[dict]:
    if op.method != "POST":
        return []
    return [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "a unique value per intended operation; a retry sends the same",
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_KEY_LENGTH,
                "pattern": "^[ -~]+$",
            },
        }
    ]


def _responses(op: Operation, refs: dict) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if op.response is None:
        responses[str(op.status)] = {"description": "done"}
    else:
        responses[str(op.status)] = {
            "description": "success",
            "content": {"application/json": {"schema": refs[op.response]}},
        }
    problem = {"content": {PROBLEM_TYPE: {"schema": refs[Problem]}}}
    codes = {400: "bad request", 401: "no valid key", 403: "the key may not do this"}
    if PATH_PARAM.search(op.rule):
        codes[404] = "not found"
    if op.method == "POST":
        codes |= {409: "conflict (or the same Idempotency-Key still running)"}
        codes |= {422: "not valid (or the Idempotency-Key was used for another request)"}
    if op.body is not None:
        codes |= {415: "not JSON", 422: "not valid"}
    for code, description in sorted(codes.items()):
        responses[str(code)] = {"description": description, **problem}
    return responses
