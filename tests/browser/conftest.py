"""Browser tests: Playwright driving Debian's Chromium (never a downloaded browser), the hub on
a real port, axe-core in every page, and screenshots of every page kept when a test fails."""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rq import SimpleWorker
from rq.timeouts import TimerDeathPenalty

from hub import queues

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
AXE = Path(__file__).resolve().parent.parent / "vendor" / "axe.min.js"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"  # git-ignored
# WCAG 2.1 A and AA: what public-sector sites in the EU must meet.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


def pytest_collection_modifyitems(items):
    if CHROMIUM:
        return
    skip = pytest.mark.skip(
        reason="Chromium is not installed (apt-get install chromium); CI has it"
    )
    for item in items:
        if "tests/browser/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    shots: list[tuple[str, bytes]] | None = getattr(item, "page_shots", None)
    if report.when == "call" and report.failed and shots:
        folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", item.nodeid)
        folder.mkdir(parents=True, exist_ok=True)
        for i, (name, png) in enumerate(shots):
            (folder / f"{i:02d}-{name}.png").write_bytes(png)
        report.sections.append(("screenshots", str(folder)))


@pytest.fixture
def chromium():
    """Per test, and set up after the app: Playwright's event loop runs in this thread while
    it is open, and the app's teardown needs the thread's loop (hub.delivery.run_in_loop)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Pages:
    """Opens browser tabs for a test; `check(page)` runs axe on what the tab shows and keeps
    a screenshot of it for the failure report."""

    def __init__(self, chromium, base_url: str, shots: list):
        self.chromium = chromium
        self.base_url = base_url
        self.shots = shots
        self.contexts = []

    def new(self):
        context = self.chromium.new_context(base_url=self.base_url, locale="en-GB")
        context.add_init_script(path=str(AXE))  # axe-core in every page this tab loads
        context.set_default_timeout(10_000)
        self.contexts.append(context)
        return context.new_page()

    def check(self, page) -> None:
        page.wait_for_load_state()
        name = re.sub(r"[^\w]+", "_", page.url.removeprefix(self.base_url))[:60] or "root"
        self.shots.append((name, page.screenshot(full_page=True)))
        violations = axe_violations(page)
        assert violations == [], f"axe on {page.url}:\n{json.dumps(violations, indent=1)}"

    def close(self) -> None:
        for context in self.contexts:
            context.close()


def axe_violations(page) -> list[dict]:
    """What axe-core finds on the page the tab shows: rule, help and the first few nodes."""
    # resultTypes: only violations get their details worked out, which makes big pages faster.
    options = {"runOnly": {"type": "tag", "values": AXE_TAGS}, "resultTypes": ["violations"]}
    result = page.evaluate("options => axe.run(document, options)", options)
    return [
        {"id": v["id"], "help": v["help"], "nodes": [n["html"] for n in v["nodes"]][:3]}
        for v in result["violations"]
    ]


class ThreadWorker(SimpleWorker):
    """The real RQ worker, in a thread: signals and SIGALRM belong to the main thread, which
    Playwright's event loop holds during a browser test."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self):
        pass


@pytest.fixture
def worker(app, rt) -> Iterator[None]:
    """Works the queues until the test ends, as `hub worker` would (jobs run in an app
    context there too: rendering uses Flask-Babel)."""
    stop = threading.Event()

    def run() -> None:
        with app.app_context():
            while not stop.is_set():
                ThreadWorker(queues.all_queues(rt.redis), connection=rt.redis).work(
                    burst=True, with_scheduler=False, logging_level="WARNING"
                )
                stop.wait(0.2)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)


@pytest.fixture
def pages(request, live_base_url, live_server, chromium) -> Iterator[Pages]:
    request.node.page_shots = []
    opened = Pages(chromium, live_server, request.node.page_shots)
    yield opened
    opened.close()
