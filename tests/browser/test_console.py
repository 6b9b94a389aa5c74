"""The staff console in a real browser (Chromium through Playwright), with a real worker run
and the providers' stand-ins: compose, approve, watch progress reach 100 %, see the messages
in the sandbox, and the sign-in lock-out. axe-core checks every page on the way."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from hub import signin
from hub.models import Role
from tests.console_helpers import PASSWORD, residents, staff

ANA = ("Ana", "sl", {"email": "ana@example.org", "sms": "+38640111222"})
JOHN = ("John", "en", {"email": "john@example.org"})


def _sign_in(pages, page, email: str) -> None:
    page.goto("/login")
    pages.check(page)
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Notices", level=1)).to_be_visible()
    pages.check(page)


def _compose(pages, page, *, emergency: bool) -> int:
    page.get_by_role("link", name="New notice").click()
    pages.check(page)
    page.get_by_label("Title (Slovenian)").fill("Zapora Koroške ceste")
    page.get_by_label("Topic").select_option("road-works")
    page.get_by_label("Find an area").fill("cen")
    page.get_by_label("Center").check()
    if emergency:
        page.get_by_label("Emergency", exact=True).check()
    page.get_by_label("Text in Slovenian").fill("Koroška cesta bo jutri zaprta.")
    page.get_by_label("Title in English").fill("Koroška road closed")
    page.get_by_label("Text in English").fill("Koroška road is closed tomorrow.")
    page.get_by_role("button", name="Refresh preview").click()
    expect(page.locator("#preview article.preview")).to_have_count(8)
    pages.check(page)
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_role("heading", name="Who it will reach")).to_be_visible()
    pages.check(page)
    return int(re.search(r"/broadcasts/(\d+)$", page.url).group(1))


def _watch_it_finish(pages, page) -> None:
    expect(page.get_by_role("heading", name="Progress")).to_be_visible()
    pages.check(page)
    # The worker process plans and sends through the stand-ins; the page polls and updates
    # itself (no reload by the test) and shows the report once the notice is done.
    expect(page.locator("[data-field=percent]")).to_have_text("100", timeout=30_000)
    expect(page.get_by_text("Deliveries over time")).to_be_visible()
    pages.check(page)


def _sandbox(page) -> list[dict]:
    return page.request.get("/sandbox/messages.json").json()


def test_a_broadcaster_composes_a_notice_in_two_languages_and_sends_it(
    pages, seeded, smtp, standin, worker
):
    residents(seeded, ANA, JOHN)
    staff(seeded, "bojan@kranj.example", Role.BROADCASTER)
    page = pages.new()
    _sign_in(pages, page, "bojan@kranj.example")
    _compose(pages, page, emergency=False)
    expect(page.get_by_role("row", name=re.compile(r"^E-mail 2 "))).to_be_visible()
    page.get_by_role("button", name="Approve and send").click()
    _watch_it_finish(pages, page)
    received = _sandbox(page)
    by_address = {m["to"]: m for m in received}
    assert set(by_address) == {"ana@example.org", "john@example.org"}  # Ana: e-mail first
    assert "Koroška cesta bo jutri zaprta." in by_address["ana@example.org"]["body"]
    assert by_address["john@example.org"]["subject"] == "Koroška road closed"
    page.goto("/sandbox")
    pages.check(page)


def test_an_emergency_by_a_broadcaster_is_approved_by_an_approver(
    pages, seeded, smtp, standin, worker
):
    residents(seeded, ANA, JOHN)
    staff(seeded, "bojan@kranj.example", Role.BROADCASTER)
    staff(seeded, "vesna@kranj.example", Role.APPROVER)
    author = pages.new()
    _sign_in(pages, author, "bojan@kranj.example")
    broadcast_id = _compose(pages, author, emergency=True)
    expect(author.locator(".emergency-banner")).to_contain_text("EMERGENCY")
    expect(author.locator("#refusal")).to_contain_text("approver role")
    expect(author.get_by_role("button", name=re.compile("Approve"))).to_have_count(0)

    approver = pages.new()
    _sign_in(pages, approver, "vesna@kranj.example")
    approver.get_by_role("link", name=re.compile("Zapora Koroške ceste")).click()
    expect(approver.locator(".badge-emergency").first).to_have_text("EMERGENCY")
    pages.check(approver)
    approver.get_by_role("button", name="Approve and send the emergency").click()
    assert approver.url.endswith(f"/broadcasts/{broadcast_id}/progress")
    _watch_it_finish(pages, approver)
    received = _sandbox(approver)
    assert {m["to"] for m in received} == {"ana@example.org", "john@example.org"}
    assert any(m["subject"] == "NUJNO: Zapora Koroške ceste" for m in received)


def test_sign_in_locks_out_after_repeated_failures(pages, seeded):
    staff(seeded, "bojan@kranj.example", Role.BROADCASTER)
    page = pages.new()
    page.goto("/login")
    for _ in range(signin.ACCOUNT_LIMIT):
        page.get_by_label("E-mail address").fill("bojan@kranj.example")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Too many failed sign-ins")
    pages.check(page)
    page.get_by_label("E-mail address").fill("bojan@kranj.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Try again in 15 minutes")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
