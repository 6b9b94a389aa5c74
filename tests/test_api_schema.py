"""The OpenAPI document is what the API does: Schemathesis generates requests from it for every
operation, sends them to the WSGI app with a valid admin key, and checks that no answer is a
server error and every answer (status, content type, body) is one the document declares."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from hub.apikeys import create_api_key
from hub.conversations import receive
from hub.web.api_v1 import api

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 12


@pytest.fixture
def admin_key(seeded):
    return create_api_key(seeded, name="fuzz", role="admin", key_type="normal", created_by="t")


@pytest.fixture
def some_data(client, admin_key, rt):
    """A resident, a notice and a conversation, so generated ids sometimes hit something."""
    auth = {"Authorization": f"Bearer {admin_key}"}
    resident = {"name": "Ana", "area": "center", "topics": ["events"], "phone": "041 123 456"}
    client.post("/api/v1/residents", json=resident, headers=auth)
    notice = {"title": "T", "topic": "events", "bodies": {"sl": "Besedilo."}}
    client.post("/api/v1/broadcasts", json=notice, headers=auth)
    with rt.session() as session:
        receive(session, "sms", "+38641123456", "Pozdravljeni", default_locale="sl")


def test_the_document_is_openapi_3_1_and_covers_every_operation(client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    operations = {op["operationId"] for item in document["paths"].values() for op in item.values()}
    assert operations == {op.endpoint for op in api.operations}
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and "POST /api/v1/residents/import" in page.text


def test_generated_requests_get_declared_answers_and_no_server_errors(app, admin_key, some_data):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    headers = {"Authorization": f"Bearer {admin_key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(api.operations)
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            case.call_and_validate(headers=headers, checks=CHECKS)

        check()
