"""Drafts in a real browser (Chromium through Playwright): save a notice, find it among the
drafts, edit it with the compose form, delete another after confirming. axe-core checks the
drafts list, the edit form and the confirmation page."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from hub.models import Role
from tests.console_helpers import PASSWORD, staff


def _sign_in(page, email: str) -> None:
    page.goto("/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Notices", level=1)).to_be_visible()


def _save(page, title: str) -> None:
    page.get_by_role("link", name="New notice").click()
    page.get_by_label("Title (Slovenian)").fill(title)
    page.get_by_label("Topic").select_option("road-works")
    page.get_by_label("Text in Slovenian").fill("Koroška cesta bo jutri zaprta.")
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_role("heading", name="Who it will reach")).to_be_visible()


def test_a_broadcaster_edits_one_draft_and_deletes_another(pages, seeded):
    staff(seeded, "bojan@kranj.example", Role.BROADCASTER)
    page = pages.new()
    _sign_in(page, "bojan@kranj.example")
    _save(page, "Zapora Koroške ceste")
    _save(page, "Odveč")

    page.get_by_role("link", name="Drafts").click()
    expect(page.get_by_role("heading", name="Drafts", level=1)).to_be_visible()
    pages.check(page)
    page.get_by_role("link", name="Zapora Koroške ceste").click()
    page.get_by_role("link", name="Edit the draft").click()
    expect(page.get_by_role("heading", name="Edit the draft", level=1)).to_be_visible()
    expect(page.get_by_label("Title (Slovenian)")).to_have_value("Zapora Koroške ceste")
    pages.check(page)
    page.get_by_label("Title (Slovenian)").fill("")
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_role("alert")).to_contain_text("Write a title.")  # nothing saved
    pages.check(page)
    page.get_by_label("Title (Slovenian)").fill("Zapora Koroške ceste podaljšana")
    page.get_by_label("Text in Slovenian").fill("Cesta ostane zaprta do petka.")
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_role("heading", name="Zapora Koroške ceste podaljšana")).to_be_visible()
    expect(page.locator("#preview")).to_contain_text("Cesta ostane zaprta do petka.")

    page.get_by_role("link", name="Drafts").click()
    page.get_by_role("link", name="Odveč").click()
    page.get_by_role("link", name="Delete the draft").click()
    expect(page.get_by_role("heading", name=re.compile("Delete the draft"))).to_be_visible()
    pages.check(page)
    page.get_by_role("button", name="Yes, delete it").click()
    expect(page.get_by_role("alert")).to_contain_text("The draft “Odveč” is deleted.")
    expect(page.locator("main table a")).to_have_text(["Zapora Koroške ceste podaljšana"])
