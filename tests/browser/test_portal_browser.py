"""The resident portal in a real browser (Chromium through Playwright), with a real worker and
the providers' stand-ins: a resident signs up with a code from the sandbox's inbox, adds a
phone, links Telegram through the Bot API stand-in, chooses a topic and an area, gets a notice,
answers it and reads the city's answer; and the service worker shows a push message as a
notification. axe-core checks every page on the way."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from channels.webpush import build_payload
from hub.broadcasts import NoticeDraft, send_notice
from hub.models import Conversation, Role
from hub.telegram_admin import set_webhook
from tests.console_helpers import PASSWORD, staff

EMAIL = "ana.novak@example.si"
PHONE, E164 = "041 222 333", "+38641222333"
CHAT_ID = 4242
WAIT_S = 30  # for the worker (on a busy machine): sending a code, planning and sending a notice


@pytest.fixture
def telegram_webhook(live_base_url, rt, standin):
    """The bot's webhook registered at the stand-in, as `hub telegram set-webhook` does. Ask
    for it before `pages`: it runs the hub's event loop, which it cannot while Playwright's
    loop holds this thread."""
    assert set_webhook(rt).registered
    return standin


def _poll(page, find, what: str):
    """What `find()` returns once it returns something; the page waits in between (Playwright
    keeps its own event loop going only while the test calls it)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        page.wait_for_timeout(200)
    raise AssertionError(f"no {what} within {WAIT_S} s")


def _sandbox(page, **filters) -> list[dict]:
    return page.request.get("/sandbox/messages.json", params=filters).json()


def _code_sent_to(page, address: str) -> str:
    """The six digits in the newest message the sandbox's phones and inboxes got at `address`."""
    sent = _poll(page, lambda: _sandbox(page, to=address), f"code for {address}")
    return re.search(r"\b(\d{6})\b", sent[0]["body"]).group(1)


def _reload_until(page, locator) -> None:
    """Reload until `locator` shows: the pages work without JavaScript and do not poll."""

    def shown() -> bool:
        if locator.count():
            return True
        page.reload()
        return False

    _poll(page, shown, "change on the page")
    expect(locator.first).to_be_visible()


def _sign_up(pages, page) -> None:
    page.goto("/me/signin")
    pages.check(page)
    page.get_by_label("E-mail address or mobile phone number").fill(EMAIL)
    page.get_by_role("button", name="Send me a code").click()
    expect(page.get_by_role("heading", name="Enter your code")).to_be_visible()
    pages.check(page)
    page.get_by_label("Code (six digits)").fill(_code_sent_to(page, EMAIL))
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    pages.check(page)


def _add_phone(pages, page) -> None:
    page.get_by_role("link", name="Where I receive it").first.click()
    pages.check(page)
    page.get_by_label("E-mail address or mobile phone number").fill(PHONE)
    page.get_by_role("button", name="Send a code to confirm it").click()
    expect(page.get_by_role("heading", name="Confirm your address")).to_be_visible()
    pages.check(page)
    page.get_by_label("Code (six digits)").fill(_code_sent_to(page, E164))
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_text("Your address is confirmed.")).to_be_visible()
    expect(
        page.get_by_role("row", name=re.compile(rf"SMS {re.escape(E164)} Confirmed"))
    ).to_be_visible()
    pages.check(page)


def _link_telegram(pages, page, standin) -> None:
    """The resident opens the deep link and presses Start: the stand-in sends `/start <token>`
    to the hub's webhook, signed with the secret, as Telegram does."""
    page.get_by_role("button", name="Get notices in Telegram").click()
    link = page.locator('a[href^="https://t.me/"]')
    token = re.search(r"\?start=([\w-]+)$", link.get_attribute("href")).group(1)
    pages.check(page)
    pressed = page.request.post(
        f"{standin.url}/control/telegram/send_update",
        data={"text": f"/start {token}", "chat_id": CHAT_ID},
    )
    assert pressed.ok, pressed.text()
    welcome = _poll(
        page, lambda: _sandbox(page, channel="telegram", to=str(CHAT_ID)), "Telegram answer"
    )
    assert "this chat is linked to your account" in welcome[0]["body"]
    page.get_by_role("link", name="Back to your addresses").click()
    expect(page.get_by_role("row", name=re.compile("Telegram chat Confirmed"))).to_be_visible()
    pages.check(page)


def _follow_road_works_in_center(pages, page) -> None:
    page.get_by_role("link", name="What I receive").first.click()
    pages.check(page)
    page.get_by_label("Your name (optional)").fill("Ana")
    page.get_by_label("Your local community").select_option(label="Center")
    page.get_by_label("Road works and closures").check()
    page.get_by_label("English").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Your choices are saved.")).to_be_visible()
    pages.check(page)


def _staff_send_notice(rt) -> int:
    bodies = {"sl": "Koroška cesta bo jutri zaprta.", "en": "Koroška road is closed tomorrow."}
    titles = {"en": "Koroška road closed"}
    draft = NoticeDraft(
        "Zapora Koroške ceste", "road-works", ("center",), "normal", "preferred", bodies, titles
    )
    return send_notice(rt, draft, actor="bojan@kranj.example")


def _answer_the_notice(pages, page, broadcast_id: int) -> None:
    page.get_by_role("link", name="My notices").first.click()
    row = page.get_by_role("row").filter(has_text="Koroška road closed")
    _reload_until(page, row.filter(has_text="Sent"))
    expect(row).to_contain_text("E-mail")  # the first of her addresses
    pages.check(page)
    row.get_by_role("link", name="Koroška road closed").click()
    assert page.url.endswith(f"/me/notices/{broadcast_id}")
    expect(page.get_by_text("Koroška road is closed tomorrow.")).to_be_visible()
    pages.check(page)
    page.get_by_label("Your answer or question").fill("When will it open again?")
    page.get_by_role("button", name="Send to the city").click()
    expect(page.get_by_text("Your answer is sent to the city.")).to_be_visible()
    expect(page.locator("article.mine").last).to_contain_text("When will it open again?")
    pages.check(page)


def _agent_answers(pages, rt) -> None:
    """An agent, in a browser of their own, answers in the conversation the answer opened."""
    staff(rt, "maja@kranj.example", Role.AGENT)
    with rt.session() as session:
        conversation_id = session.scalar(
            select(Conversation.id).where(Conversation.channel == "web")
        )
    agent = pages.new()
    agent.goto("/login")
    agent.get_by_label("E-mail address").fill("maja@kranj.example")
    agent.get_by_label("Password").fill(PASSWORD)
    agent.get_by_role("button", name="Sign in").click()
    agent.goto(f"/inbox/{conversation_id}")
    expect(agent.get_by_text("When will it open again?")).to_be_visible()
    agent.get_by_label("Answer to the resident").fill("It opens at 4 pm.")
    agent.get_by_role("button", name="Send the answer").click()
    expect(agent.get_by_text("The answer is on its way.")).to_be_visible()
    agent.context.close()  # ends the inbox's live updates before the hub stops


def test_a_resident_signs_up_links_telegram_and_answers_a_notice(
    telegram_webhook, pages, seeded, smtp, worker
):
    page = pages.new()
    _sign_up(pages, page)
    _add_phone(pages, page)
    _link_telegram(pages, page, telegram_webhook)
    _follow_road_works_in_center(pages, page)
    broadcast_id = _staff_send_notice(seeded)
    _answer_the_notice(pages, page, broadcast_id)
    _agent_answers(pages, seeded)
    _reload_until(page, page.locator("article.city").filter(has_text="It opens at 4 pm."))
    # The same thread: her answer about the notice, then the city's answer to it.
    thread = page.locator("article.message")
    expect(thread.nth(-2)).to_contain_text("When will it open again?")
    expect(thread.nth(-2).get_by_role("link", name="about a notice")).to_have_attribute(
        "href", f"/me/notices/{broadcast_id}"
    )
    expect(thread.nth(-1)).to_contain_text("The city")
    expect(thread.nth(-1)).to_contain_text("It opens at 4 pm.")
    pages.check(page)


_NOTIFICATIONS = """() => navigator.serviceWorker.ready
  .then(registration => registration.getNotifications())
  .then(shown => shown.map(n => ({title: n.title, body: n.body, url: n.data.url})))"""


def _active_registration(page, events: list[dict]) -> str:
    """The id of the service worker registration once its worker is activated, from the
    ServiceWorker domain's workerVersionUpdated events."""

    def activated() -> str | None:
        versions = [v for e in events for v in e["versions"] if v["status"] == "activated"]
        return versions[-1]["registrationId"] if versions else None

    return _poll(page, activated, "activated service worker")


def test_the_service_worker_shows_a_pushed_notice(pages, seeded, smtp, worker, live_server):
    """The browser's push service cannot be reached from here (headless Chromium's own push
    service is Google's, and its incognito contexts refuse subscriptions), so DevTools hands
    the service worker the message the push service would, in the hub's payload format."""
    page = pages.new()
    page.context.grant_permissions(["notifications"], origin=live_server)
    _sign_up(pages, page)
    page.get_by_role("link", name="Where I receive it").first.click()
    devtools = page.context.new_cdp_session(page)
    versions: list[dict] = []
    devtools.on("ServiceWorker.workerVersionUpdated", lambda event: versions.append(event))
    devtools.send("ServiceWorker.enable")
    expect(page.get_by_role("heading", name="Notifications in this browser")).to_be_visible()
    pages.check(page)
    page.get_by_role("button", name="Get notices as notifications here").click()
    registration_id = _active_registration(page, versions)
    scope = page.evaluate("navigator.serviceWorker.ready.then(r => r.scope)")
    assert scope == f"{live_server}/me/"  # the portal's pages are in it

    url = f"{live_server}/notices/7"

    def push(body: str) -> None:
        payload = build_payload("Koroška road closed", body, url)  # as the hub's push channel
        devtools.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": live_server, "registrationId": registration_id, "data": payload.decode()},
        )

    push("Koroška road is closed tomorrow.")
    shown = _poll(page, lambda: page.evaluate(_NOTIFICATIONS), "notification")
    assert shown == [
        {"title": "Koroška road closed", "body": "Koroška road is closed tomorrow.", "url": url}
    ]
    # The same notice sent again (corrected) replaces its notification instead of adding one.
    push("Koroška road is closed on Friday.")
    _poll(
        page,
        lambda: any("Friday" in n["body"] for n in page.evaluate(_NOTIFICATIONS)),
        "corrected notification",
    )
    bodies = [n["body"] for n in page.evaluate(_NOTIFICATIONS)]
    assert bodies == ["Koroška road is closed on Friday."]
