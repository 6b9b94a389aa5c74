"""Sign-in hardening: lock-out per account and per address (in Redis, so every web process
agrees), cookie flags, session lifetime, and sign-out everywhere."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hub import create_app, signin
from hub.config import ConfigError, Settings
from hub.models import AuditEntry, Role
from tests.conftest import IsolatedClient
from tests.console_helpers import PASSWORD, login, staff


def _client(app):
    app.test_client_class = IsolatedClient
    return app.test_client()


def _actions(rt) -> list[str]:
    with rt.session() as session:
        return list(session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def test_an_account_is_locked_out_after_repeated_failures_even_with_the_right_password(rt, client):
    email = staff(rt, "urska@kranj.example", Role.BROADCASTER)
    for _ in range(signin.ACCOUNT_LIMIT - 1):
        assert login(client, email, "wrong password!").status_code == 401
    locked = login(client, email, "wrong password!")
    assert locked.status_code == 429
    assert "Try again in 15 minutes" in locked.text or "Poskusite znova čez 15 minut" in locked.text
    assert 0 < int(locked.headers["Retry-After"]) <= signin.LOCK_S
    assert login(client, email, PASSWORD).status_code == 429
    assert client.get("/").status_code == 302  # still not signed in
    actions = _actions(rt)
    assert actions.count("signin.failed") == signin.ACCOUNT_LIMIT
    assert "signin.locked" in actions


def test_the_lock_out_holds_in_another_web_process(rt, settings, client):
    """A second app (another process in production) reads the same counters in Redis."""
    email = staff(rt, "urska@kranj.example", Role.BROADCASTER)
    for _ in range(signin.ACCOUNT_LIMIT):
        login(client, email, "wrong password!")
    other = _client(create_app(settings))
    refused = login(other, email, PASSWORD)
    assert refused.status_code == 429
    rt.redis.delete(*rt.redis.keys("hub:signin:*"))  # the lock expires
    assert login(other, email, PASSWORD).status_code == 302


def test_one_address_trying_many_accounts_is_locked_out(rt, client):
    email = staff(rt, "urska@kranj.example", Role.BROADCASTER)
    for i in range(signin.ADDRESS_LIMIT):
        login(client, f"guess{i}@kranj.example", "wrong password!", address="203.0.113.9")
    assert login(client, email, PASSWORD, address="203.0.113.9").status_code == 429
    # Someone else, elsewhere, signs in as usual.
    assert login(client, email, PASSWORD, address="198.51.100.1").status_code == 302


def test_a_success_clears_the_failures_of_the_account(rt, client):
    email = staff(rt, "urska@kranj.example", Role.BROADCASTER)
    for _ in range(signin.ACCOUNT_LIMIT - 1):
        login(client, email, "wrong password!")
    assert login(client, email, PASSWORD).status_code == 302
    client.post("/logout", data={"csrf_token": _token(client)})
    assert login(client, email, "wrong password!").status_code == 401  # counting from 1 again


def _token(client) -> str:
    import re

    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text).group(1)


def test_session_cookie_flags_and_lifetime(rt, settings):
    secure = settings.replace(base_url="https://glas.kranj.si", session_lifetime_s=3600)
    client = _client(create_app(secure))
    staff(rt, "urska@kranj.example", Role.BROADCASTER)
    response = login(client, "urska@kranj.example")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
    assert "Expires=" in cookie
    plain = _client(create_app(settings))
    assert "Secure" not in login(plain, "urska@kranj.example").headers["Set-Cookie"]


def test_sign_out_everywhere_ends_the_sessions_on_other_devices(rt, settings, client):
    staff(rt, "urska@kranj.example", Role.BROADCASTER)
    phone = _client(create_app(settings))
    login(client, "urska@kranj.example")
    login(phone, "urska@kranj.example")
    assert phone.get("/").status_code == 200
    done = client.post("/logout/everywhere", data={"csrf_token": _token(client)})
    assert done.status_code == 302
    assert phone.get("/").status_code == 302  # the phone's session is over too
    assert client.get("/").status_code == 302
    assert "signin.sign_out_everywhere" in _actions(rt)
    login(phone, "urska@kranj.example")  # signing in again works
    assert phone.get("/").status_code == 200


def test_sign_out_everywhere_needs_csrf(rt, client):
    staff(rt, "urska@kranj.example", Role.BROADCASTER)
    login(client, "urska@kranj.example")
    assert client.post("/logout/everywhere").status_code == 400
    assert client.get("/").status_code == 200


def test_a_lower_limit_from_the_environment_locks_sooner_and_for_its_time(rt, settings):
    strict = create_app(settings.replace(signin_max_failures=2, signin_lockout_s=120))
    client = _client(strict)
    email = staff(rt, "urska@kranj.example", Role.BROADCASTER)
    assert login(client, email, "wrong password!").status_code == 401
    locked = login(client, email, "wrong password!")
    assert locked.status_code == 429
    assert 0 < int(locked.headers["Retry-After"]) <= 120
    assert login(client, email, PASSWORD).status_code == 429
    # A client address may fail four times the account limit: eight accounts here.
    for i in range(7):
        login(client, f"guess{i}@kranj.example", "wrong password!", address="203.0.113.9")
    assert login(client, email, PASSWORD, address="203.0.113.9").status_code == 429


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("HUB_SIGNIN_MAX_FAILURES", "five", "must be a whole number"),
        ("HUB_SIGNIN_MAX_FAILURES", "0", "must be at least 1"),
        ("HUB_SIGNIN_LOCKOUT", "-60", "must be at least 1"),
        ("HUB_SIGNIN_LOCKOUT", "15m", "must be a whole number"),
    ],
)
def test_bad_lock_out_settings_stop_the_start_with_the_reason(monkeypatch, name, value, reason):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name} {reason}"):
        Settings.from_env()


def test_the_lock_out_settings_are_read_from_the_environment(monkeypatch):
    monkeypatch.delenv("HUB_SIGNIN_MAX_FAILURES", raising=False)
    monkeypatch.delenv("HUB_SIGNIN_LOCKOUT", raising=False)
    assert Settings.from_env().signin_max_failures == signin.ACCOUNT_LIMIT == 5
    monkeypatch.setenv("HUB_SIGNIN_MAX_FAILURES", "3")
    monkeypatch.setenv("HUB_SIGNIN_LOCKOUT", "600")
    settings = Settings.from_env()
    assert (settings.signin_max_failures, settings.signin_lockout_s) == (3, 600)
