"""Every page of the hub in a real browser, found from the app's own URL map rather than a list:
axe-core (WCAG 2.1 AA) on each, in English and in Slovenian, opened by whoever may open it (an
admin for staff pages, a signed-in resident for /me, nobody for public ones); residents' and
public pages also at a phone's 320 px with a keyboard alone. A GET route added tomorrow is
crawled without anyone listing it. One with URL parameters needs a value from the small world
seeded below or a reason in SKIP, else the crawl fails: coverage cannot rot in silence.

Answers that are not pages (JSON, feeds, CSV, event streams, HTML fragments a page's script
fetches) are told apart by what the hub answers, not by a list."""

from __future__ import annotations

import itertools
import re
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from sqlalchemy import select
from werkzeug.routing import AnyConverter

from channels.sandbox.smtp import free_port, start_smtp_standin
from channels.sandbox.store import SandboxStore
from hub import clock, create_app, inbox
from hub.broadcasts import Actor, NoticeDraft, save_draft, send_notice
from hub.callbacks import add_endpoint
from hub.config import Settings
from hub.conversations import reply
from hub.models import CodePurpose, Delivery, Resident, Role, StaffUser
from hub.portal import request_code
from hub.portal_notices import write
from hub.seed import seed_kranj
from hub.tokens import make_token
from hub.web import access_rule
from tests.browser.conftest import CHROMIUM, Pages, axe_violations
from tests.conftest import fresh_settings, running_app, serving
from tests.console_helpers import PASSWORD, residents, staff
from tests.helpers import work

ADMIN = "admin@kranj.example"
ANA = ("Ana Novak", "sl", {"email": "ana@example.org"})
JOHN = ("John Smith", "en", {"email": "john@example.org"})
LANGUAGES = ("en", "sl")
NARROW_PX = 320
WIDE = {"width": 1280, "height": 720}  # Playwright's default viewport
MAX_TABS = 400  # Tab presses at most: more than any page has controls

# A URL parameter's value, named by the parameter where it means the same on every route...
BY_ARG = {
    "broadcast_id": "notice",  # a normal notice that went out to Ana and John
    "conversation_id": "conversation",  # Ana's answer to it, the city's reply and a note
    "resident_id": "ana",
    "filename": "stylesheet",
}
# ... or by the route, where the same name means something else ({kind}: the value chosen for
# <any(...):kind>, which the crawl visits once per choice).
BY_ENDPOINT = {
    # Only a draft has these pages; a sent notice redirects to its progress.
    "broadcasts.draft": {"broadcast_id": "draft"},
    "broadcasts.cancel": {"broadcast_id": "scheduled"},  # what can still be cancelled
    "broadcasts.edit": {"broadcast_id": "draft"},
    "broadcasts.delete": {"broadcast_id": "draft"},
    "portal.link": {"token": "link_token"},  # a sign-in link nobody has used
    "public.unsubscribe_page": {"token": "unsubscribe_token"},
    "admin.catalogue_edit": {"slug": "{kind}_slug"},
}
# Routes with parameters the crawl cannot fill, each with why that is fine.
SKIP = {
    "notify_v2.get_notification": "Notify-compatible API: JSON for a key's JWT, never a page",
    "notify_v2.template": "Notify-compatible API: JSON for a key's JWT, never a page",
}


@dataclass(frozen=True)
class Route:
    endpoint: str
    rule: str
    arguments: tuple[str, ...]  # the ones to fill
    access: str  # hub.web.access_rule: public, resident or roles
    chosen: tuple[tuple[str, str], ...] = ()  # <any(a, b):x> is crawled once per choice

    def value_key(self, argument: str) -> str | None:
        key = BY_ENDPOINT.get(self.endpoint, {}).get(argument) or BY_ARG.get(argument)
        return key.format(**dict(self.chosen)) if key else None

    @property
    def id(self) -> str:
        """The rule as people read it: /admin/topics/<slug>, /notices/<broadcast_id>."""
        path = self.rule
        for argument, choice in self.chosen:
            path = re.sub(rf"<any\([^)]*\):{argument}>", choice, path)
        return re.sub(r"<[^>]*:(\w+)>", r"<\1>", path)


def get_routes() -> list[Route]:
    """Every GET route, read from an app built only for its URL map (nothing connects)."""
    settings = Settings(
        instance_path=Path(tempfile.gettempdir()) / "hub-url-map",
        database_url="sqlite://",
        redis_url="redis://127.0.0.1:1/0",
        secret_key="only-the-url-map",
    )
    app = create_app(settings)
    routes = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if "GET" not in rule.methods:
            continue
        access = access_rule(app.view_functions[rule.endpoint])
        choices = {
            a: sorted(c.items) for a, c in rule._converters.items() if isinstance(c, AnyConverter)
        }
        to_fill = tuple(sorted(set(rule.arguments) - set(choices)))
        for chosen in itertools.product(
            *([(a, v) for v in vs] for a, vs in sorted(choices.items()))
        ):
            routes.append(Route(rule.endpoint, rule.rule, to_fill, access, chosen))
    return routes


ROUTES = get_routes()


def pytest_generate_tests(metafunc):
    if "route" in metafunc.fixturenames:
        metafunc.parametrize("route", ROUTES, ids=[r.id for r in ROUTES])
    if "lang" in metafunc.fixturenames:
        metafunc.parametrize("lang", LANGUAGES)


# -- the world --------------------------------------------------------------------------------


def _seed(rt) -> dict[str, object]:
    """A small city: two residents, a notice that went out to them, an emergency draft, a
    notice scheduled for tomorrow, Ana's answer with the city's reply and a note, a canned
    answer, a callback endpoint, and unused sign-in links. Returns the values URL parameters
    are filled with."""
    with rt.session() as session:
        seed_kranj(session)
    staff(rt, ADMIN, Role.ADMIN)
    residents(rt, ANA, JOHN)
    bodies = {"sl": "Koroška cesta bo jutri zaprta.", "en": "Koroška road is closed tomorrow."}
    titles = {"en": "Koroška road closed"}
    notice = send_notice(
        rt,
        NoticeDraft(
            "Zapora Koroške ceste", "road-works", ("center",), "normal", "preferred", bodies, titles
        ),
        actor=ADMIN,
    )
    work(rt)
    emergency = NoticeDraft(
        "Poplava", "road-works", ("center",), "emergency", "all", bodies, titles
    )
    draft = save_draft(rt, emergency, actor=Actor(ADMIN, Role.ADMIN))
    tomorrow = NoticeDraft(
        "Odvoz kosovnih odpadkov", "road-works", ("center",), "bulk", "preferred", bodies,
        titles, scheduled_at=clock.utcnow() + timedelta(days=1),
    )  # fmt: skip
    scheduled = send_notice(rt, tomorrow, actor=ADMIN)
    with rt.session() as session:
        admin_id = session.scalar(select(StaffUser.id).where(StaffUser.email == ADMIN))
        ana = session.scalar(select(Resident.id).where(Resident.name == ANA[0]))
        delivery = session.scalar(select(Delivery.id).where(Delivery.resident_id == ana))
        answer = write(
            session, ana, "Kdaj bo spet odprta?", default_locale="sl", broadcast_id=notice
        )
        conversation = answer.conversation_id
        reply(session, conversation, "Ob 16. uri.", author_id=admin_id)
        inbox.add_note(session, conversation, "Preveri pri komunali.", admin_id)
        inbox.save_canned(session, "hvala", "sl", "Hvala za sporočilo.")
    for address in ("ana@example.org", "john@example.org"):
        request_code(rt, address, purpose=CodePurpose.SIGN_IN, locale="en", client="crawl")
    work(rt)
    with rt.session() as session:
        add_endpoint(
            session,
            name="Odvoz odpadkov",
            url="https://odpadki.kranj.example/hooks",
            events=["delivery-status"],
            actor=ADMIN,
            secret_key=rt.settings.secret_key,
        )
    return {
        "notice": notice,
        "draft": draft,
        "scheduled": scheduled,
        "conversation": conversation,
        "ana": ana,
        "stylesheet": "hub.css",
        "topics_slug": "road-works",
        "areas_slug": "center",
        "sign_in_token": _link_sent_to(rt, "ana@example.org"),
        "link_token": _link_sent_to(rt, "john@example.org"),
        "unsubscribe_token": make_token(rt.settings.secret_key, "unsub", delivery),
    }


def _link_sent_to(rt, address: str) -> str:
    """The sign-in link's token in the e-mail the SMTP stand-in received for `address`."""
    inbox_of = SandboxStore(rt.settings.sandbox_db_path).messages(channel="email", to=address)
    return re.search(r"/me/link/([A-Za-z0-9_-]+)", inbox_of[0]["body"]).group(1)


@dataclass
class World:
    """The seeded hub on a real port and one browser; a tab per (who, language), signed in
    once and kept for the whole crawl."""

    app: object
    values: dict
    pages: Pages
    tabs: dict = field(default_factory=dict)

    def url(self, route: Route) -> str:
        if route.endpoint in SKIP:
            pytest.skip(SKIP[route.endpoint])
        values = {}
        for argument in route.arguments:
            key = route.value_key(argument)
            if key is None:
                pytest.fail(
                    f"{route.rule} ({route.endpoint}): nothing fills <{argument}>. Give it a "
                    "value in BY_ARG or BY_ENDPOINT (seeded in _seed), or a reason in SKIP."
                )
            values[argument] = self.values[key]
        values.update(route.chosen)
        rule = next(r for r in self.app.url_map.iter_rules(route.endpoint) if r.rule == route.rule)
        return rule.build(values, append_unknown=False)[1]

    def tab(self, access: str, lang: str):
        key = (access, lang)
        if key not in self.tabs:
            if lang == "en":  # the browser asks for English (Pages: en-GB)
                page = self._signed_in(access)
            else:  # the same session, switched with the language buttons every page has
                page = self.pages.new()
                page.context.add_cookies(self.tab(access, "en").context.cookies())
                page.goto("/login")
                page.get_by_role("button", name="Slovenščina").click()
                page.wait_for_load_state()
            self.tabs[key] = page
        return self.tabs[key]

    def _signed_in(self, access: str):
        page = self.pages.new()
        if access == "roles":  # an admin may open every staff page
            page.goto("/login")
            page.get_by_label("E-mail address").fill(ADMIN)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/")
        elif access == "resident":  # Ana signs in with the link from her e-mail
            page.goto(f"/me/link/{self.values['sign_in_token']}")
            page.get_by_role("button", name="Continue").click()
            page.wait_for_url("**/me/")
            page.goto("/me/contacts")  # and adds a phone: /me/contacts/verify is a page then
            page.locator("main input[name=address]").fill("041 555 666")
            page.get_by_role("button", name="Send a code to confirm it").click()
            page.wait_for_url("**/me/contacts/verify")
        else:  # a visitor who has asked for a sign-in code: /me/signin/code is a page then
            page.goto("/me/signin")
            page.locator("main input[name=address]").fill("visitor@example.org")
            page.locator("main form button[type=submit]").click()
            page.wait_for_url("**/me/signin/code")
        return page


@pytest.fixture(scope="module")
def world(tmp_path_factory, migrated_template, redis_url):
    instance = tmp_path_factory.mktemp("every-page") / "instance"
    settings = fresh_settings(instance, migrated_template, redis_url)
    settings.base_url = f"http://127.0.0.1:{free_port()}"
    smtp = start_smtp_standin(settings.sandbox_db_path, settings.sandbox_smtp_port)
    try:
        with running_app(settings) as app, serving(app, settings.base_url):
            app.config["HUB_EVENTS_STREAM_S"] = 0.2  # the inbox's event stream ends soon
            values = _seed(app.extensions["hub"])
            # After the app, as tests/browser/conftest.py's `chromium` fixture explains.
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox"]
                )
                pages = Pages(browser, settings.base_url, [])
                yield World(app, values, pages)
                pages.close()
                browser.close()
    finally:
        smtp.stop()


# -- the checks -------------------------------------------------------------------------------

# Tab's record: every element that takes focus, and whether the eye can see that it has it (an
# outline or a shadow), read the moment it gets it.
WATCH_FOCUS_JS = """() => {
  window.__tabbed = new Map();
  document.addEventListener('focusin', event => {
    const style = getComputedStyle(event.target);
    const outline = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0;
    window.__tabbed.set(event.target, outline || style.boxShadow !== 'none');
  });
}"""
# Controls a person can see and use that Tab has not reached yet (a radio group counts as
# reached with one of its radios: arrow keys move within it), and reached ones that showed no
# focus.
TAB_REPORT_JS = """() => {
  const tabbed = window.__tabbed;
  const shown = el => el.getClientRects().length > 0
    && getComputedStyle(el).visibility !== 'hidden';
  const groups = new Set([...tabbed.keys()].filter(el => el.type === 'radio').map(el => el.name));
  const html = el => el.outerHTML.slice(0, 160);
  const missed = [...document.querySelectorAll(
    "a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]"
  )].filter(el => !el.disabled && el.tabIndex >= 0 && shown(el) && !el.closest('[inert]'))
    .filter(el => !tabbed.has(el) && !(el.type === 'radio' && groups.has(el.name)));
  const unseen = [...tabbed].filter(([el, visible]) => !visible).map(([el]) => el);
  return {missed: missed.map(html), unseen: unseen.map(html)};
}"""
# The elements that stick out past the right edge (the innermost few): what makes it scroll.
WIDE_JS = """limit => [...document.body.querySelectorAll('*')]
  .filter(el => el.getBoundingClientRect().right > limit
    && ![...el.children].some(c => c.getBoundingClientRect().right > limit))
  .slice(0, 5).map(el => el.outerHTML.slice(0, 160))"""


def _fetch(tab, url: str):
    """GET the URL with the tab's cookies, not following redirects: is it a page at all?
    (GET, never HEAD: a HEAD request runs several views' POST branch.)"""
    response = tab.request.get(url, max_redirects=0)
    location = response.headers.get("location")
    assert not location, f"{url} redirects to {location}: seed what it needs, or sign in"
    return response


def _not_a_page(response) -> str | None:
    """Why the answer is no page (JSON, a feed, a file, a fragment a page's script fetches)."""
    kind = response.headers.get("content-type", "")
    if "text/html" not in kind:
        return f"not a page: {response.status} {kind}"
    if "<html" not in response.text()[:500].lower():
        return "an HTML fragment: checked inside the page whose script fetches it"
    return None


def _open(tab, url: str) -> None:
    tab.set_viewport_size(WIDE)
    response = tab.goto(url)
    assert response.status == 200, f"{url} answered {response.status}"
    assert tab.url.endswith(url), f"{url} went to {tab.url}"


def _tab_through(tab) -> dict[str, list[str]]:
    """Press Tab until every control has had focus, or a round of presses finds none new
    (a round is long enough to cross a date-and-time field's parts)."""
    tab.evaluate(WATCH_FOCUS_JS)
    report = tab.evaluate(TAB_REPORT_JS)
    presses = 0
    while report["missed"] and presses < MAX_TABS:
        round_ = len(report["missed"]) + 8
        for _ in range(round_):
            tab.keyboard.press("Tab")
        presses += round_
        before, report = report, tab.evaluate(TAB_REPORT_JS)
        if report["missed"] == before["missed"]:
            break
    problems = {}
    if report["missed"]:
        problems["not reachable by Tab"] = report["missed"]
    if report["unseen"]:
        problems["focus not visible"] = report["unseen"]
    return problems


def _narrow_problems(tab) -> dict[str, list[str]]:
    """The page narrowed to 320 px: what scrolls sideways, and what Tab cannot reach or shows
    no focus on. It stays narrow (the screenshot of a failure shows it so); the next page
    widens the tab again."""
    problems: dict[str, list[str]] = {}
    tab.set_viewport_size({"width": NARROW_PX, "height": 640})
    width = tab.evaluate("() => document.scrollingElement.scrollWidth")
    if width > NARROW_PX + 1:
        problems[f"scrolls sideways ({width} px)"] = tab.evaluate(WIDE_JS, NARROW_PX + 1)
    problems.update(_tab_through(tab))
    return problems


def test_every_page(world, route, lang, request):
    """The page passes axe-core in `lang`, says so in <html lang>, and (residents' and public
    pages) fits 320 px and works with Tab alone."""
    url = world.url(route)
    tab = world.tab(route.access, lang)
    if reason := _not_a_page(_fetch(tab, url)):
        pytest.skip(reason)
    _open(tab, url)
    problems: dict[str, object] = {}
    if (lang_attribute := tab.evaluate("() => document.documentElement.lang")) != lang:
        problems["lang"] = lang_attribute
    if violations := axe_violations(tab):
        problems["axe"] = violations
    if route.access != "roles":  # residents and the public: phones and keyboards
        problems.update(_narrow_problems(tab))
    if problems:
        request.node.page_shots = [("page", tab.screenshot(full_page=True))]
    assert problems == {}, f"{url} ({lang}): {problems}"


def test_every_parametrised_route_is_crawled_or_skipped_with_a_reason():
    """A new route with a parameter nobody fills would drop out of the crawl unnoticed."""
    unfilled = [
        f"{route.rule}: <{argument}>"
        for route in ROUTES
        if route.endpoint not in SKIP
        for argument in route.arguments
        if route.value_key(argument) is None
    ]
    assert unfilled == [], "fill in BY_ARG / BY_ENDPOINT (and _seed), or give a reason in SKIP"
    stale = set(SKIP) - {route.endpoint for route in ROUTES}
    assert stale == set(), "SKIP names routes that are gone"
