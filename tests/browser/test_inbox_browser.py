"""The agents' inbox in a real browser (Chromium through Playwright): residents answer a notice
by SMS (signed Twilio webhooks over a real socket), an agent signs in, moves through the inbox
with the keyboard, answers, and a real worker sends the answer to the Twilio stand-in, where
the sandbox shows it on the resident's phone. axe-core checks every page on the way."""

from __future__ import annotations

import time

from playwright.sync_api import expect
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from hub import providers
from hub.broadcasts import NoticeDraft, send_notice
from hub.models import Message, Role
from tests.console_helpers import PASSWORD, residents, staff

ANA = ("Ana", "sl", {"sms": "+38640111222"})
JANEZ = ("Janez", "sl", {"sms": "+38640111333"})
ANSWER = "Cesta bo spet odprta v petek ob 16. uri."


def _until(condition, what: str, timeout_s: float = 30) -> None:
    """Wait for the worker thread (a real RQ worker) to get something done."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _sms_to(page, to: str) -> list[dict]:
    return [m for m in page.request.get("/sandbox/messages.json").json() if m["to"] == to]


def _inbound(rt) -> int:
    with rt.session() as session:
        return session.scalar(select(func.count()).where(Message.direction == "in"))


def _reply_by_sms(page, rt, sender: str, body: str, sid: str) -> None:
    """What Twilio does when a resident answers: a signed webhook, here over a real socket."""
    url = f"{rt.settings.base_url}/webhooks/twilio/sms"
    params = {"MessageSid": sid, "From": sender, "To": "+15005550006", "Body": body}
    signature = RequestValidator(providers.twilio_account(rt).auth_token).compute_signature(
        url, params
    )
    response = page.request.post(url, form=params, headers={"X-Twilio-Signature": signature})
    assert response.status == 200, response.text()


def _sign_in(pages, page, email: str) -> None:
    page.goto("/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Notices", level=1)).to_be_visible()


def _selected(page):
    return page.locator("tr[data-row].selected a.open")


def test_an_agent_answers_a_residents_sms_reply_from_the_inbox(
    pages, seeded, smtp, standin, worker
):
    rt = seeded
    residents(rt, ANA, JANEZ)
    staff(rt, "maja@kranj.example", Role.AGENT)
    title = "Zapora Koroške ceste"
    send_notice(
        rt,
        NoticeDraft(title, "road-works", ("center",), "normal", "preferred", {"sl": title}),
        actor="test",
    )
    page = pages.new()
    _until(lambda: len(page.request.get("/sandbox/messages.json").json()) == 2, "the notice")
    _reply_by_sms(page, rt, ANA[2]["sms"], "Kdaj bo cesta spet odprta?", "SM" + "1" * 32)
    _reply_by_sms(page, rt, JANEZ[2]["sms"], "Hvala za obvestilo.", "SM" + "2" * 32)
    _until(lambda: _inbound(rt) == 2, "the replies in the inbox")

    _sign_in(pages, page, "maja@kranj.example")
    page.get_by_role("link", name="Inbox").click()
    expect(page.get_by_role("heading", name="Inbox", level=1)).to_be_visible()
    expect(page.locator("a.open")).to_have_text(["Ana", "Janez"])  # longest waiting first
    expect(page.get_by_text("Kdaj bo cesta spet odprta?")).to_be_visible()
    pages.check(page)

    # The keyboard: j and k move through the list, ? lists the shortcuts, r opens the
    # selected conversation with the answer box focused.
    page.keyboard.press("j")
    expect(_selected(page)).to_have_text("Ana")
    page.keyboard.press("j")
    expect(_selected(page)).to_have_text("Janez")
    page.keyboard.press("k")
    expect(_selected(page)).to_have_text("Ana")
    page.keyboard.press("?")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    page.get_by_role("button", name="Close").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    page.keyboard.press("r")
    expect(page.get_by_role("heading", name="Ana", level=1)).to_be_visible()
    expect(page.locator("#reply-text")).to_be_focused()
    expect(page.locator("ol.messages")).to_contain_text("Kdaj bo cesta spet odprta?")
    expect(page.locator("ol.messages")).to_contain_text("Answers notice")
    pages.check(page)

    page.keyboard.type(ANSWER)  # into the focused answer box: j, k and r are letters here
    expect(page.get_by_label("Answer to the resident")).to_have_value(ANSWER)
    page.get_by_role("button", name="Send the answer").click()
    expect(page.get_by_role("alert")).to_contain_text("The answer is on its way.")
    expect(page.locator("li.message.out")).to_contain_text(ANSWER)
    pages.check(page)

    _until(lambda: len(_sms_to(page, ANA[2]["sms"])) == 2, "the answer")
    answer, notice = _sms_to(page, ANA[2]["sms"])  # newest first
    assert answer["body"] == ANSWER and title in notice["body"]
    assert [ANSWER not in m["body"] for m in _sms_to(page, JANEZ[2]["sms"])] == [True]

    # On a conversation, j goes on to the next one of the list it was opened from.
    page.keyboard.press("j")
    expect(page.get_by_role("heading", name="Janez", level=1)).to_be_visible()

    page.goto("/sandbox")
    expect(page.get_by_text(ANSWER).first).to_be_visible()
    pages.check(page)
