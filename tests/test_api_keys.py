"""API keys: made by an admin on the command line, shown once, recognised, revoked."""

from __future__ import annotations

from sqlalchemy import func, select

from hub.apikeys import create_api_key, key_for_bearer, service_id, signing_secrets, split_key
from hub.models import ApiKey, AuditEntry
from tests.test_cli import hub  # noqa: F401  (the fixture that runs the real `hub` command)


def test_cli_key_is_printed_once_recognised_and_revocable(hub, rt):  # noqa: F811
    created = hub("api-keys", "create", "--name", "Odvoz odpadkov", "--role", "broadcaster")
    key = created.stdout.strip()
    assert "shown once" in created.stderr
    assert key.startswith("odvoz_odpadkov-")
    assert split_key(key)[0] == service_id(rt)
    holder = key_for_bearer(rt, key)
    assert (holder.name, holder.role) == ("Odvoz odpadkov", "broadcaster")
    assert holder.key_type == "normal"
    with rt.session() as session:
        stored = session.scalar(select(ApiKey))
        assert split_key(key)[1] not in (stored.secret_hash, stored.secret_sealed)
    listed = hub("api-keys", "list").stdout
    assert f"{holder.id}\tOdvoz odpadkov\tbroadcaster\tnormal\t" in listed
    assert split_key(key)[1] not in listed

    assert "revoked" in hub("api-keys", "revoke", str(holder.id)).stdout
    assert key_for_bearer(rt, key) is None
    assert signing_secrets(rt, service_id(rt)) == []
    again = hub("api-keys", "revoke", str(holder.id), check=False)
    assert again.returncode == 2


def test_bad_cli_input_exits_2_and_stores_nothing(hub, rt):  # noqa: F811
    for args in (
        ("--name", "x", "--role", "king"),
        ("--name", "x", "--role", "agent", "--type", "live"),
        ("--name", "   ", "--role", "agent"),
    ):
        result = hub("api-keys", "create", *args, check=False)
        assert result.returncode == 2, args
        assert result.stderr.strip()
    with rt.session() as session:
        assert session.scalar(select(func.count()).select_from(ApiKey)) == 0


def test_forged_and_foreign_keys_are_not_recognised(rt):
    key = create_api_key(rt, name="parking", role="agent", key_type="test", created_by="admin")
    service, secret = split_key(key)
    other_service = "00000000-0000-4000-8000-000000000000"
    assert key_for_bearer(rt, f"parking-{service}-{other_service}") is None
    assert key_for_bearer(rt, f"parking-{other_service}-{secret}") is None
    assert key_for_bearer(rt, "Bearer nonsense") is None
    assert key_for_bearer(rt, "") is None
    assert signing_secrets(rt, other_service) == []
    [(holder, signing_secret)] = signing_secrets(rt, service)
    assert (holder.key_type, signing_secret) == ("test", secret)
    with rt.session() as session:
        assert session.scalar(select(AuditEntry.action)) == "api_key.create"
