"""Four-eyes with decline, and the notifications badge, in real headless Chromium."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from .support import CHROMIUM, CHROMIUM_ARGS, ConsoleServer, browser_login, seed_capture

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_four_eyes_request_declined_with_a_reason_in_chromium(browser, world, tmp_path):
    now = int(time.time() * 1000)
    qid = seed_capture(world.store, site_id="north", device_id=world.devices["it1"],
                       category="csam", severity=5, rule_id="csam.terms", time_ms=now)
    ARTIFACTS.mkdir(exist_ok=True)
    with ConsoleServer(world.db_path, tmp_path) as srv:
        dctx, dsl = browser_login(browser, srv.url, "dsl1")
        dsl.goto(f"{srv.url}/captures/{qid}")
        dsl.fill("form.unlock input[name=reason]", "Preparing the police referral")
        dsl.click("form.unlock button[type=submit]")
        dsl.wait_for_selector("#unlock-pending")

        pctx, deputy = browser_login(browser, srv.url, "deputy1")
        badge = deputy.locator("#notice-badge")
        assert badge.is_visible() and int(badge.inner_text()) >= 1
        deputy.click("#notices-link")
        deputy.wait_for_selector("#notices li.approval")
        assert "Preparing the police referral" in deputy.locator("#notices").inner_text()
        deputy.screenshot(path=str(ARTIFACTS / "console-notifications.png"), full_page=True)
        deputy.click("#notices li.approval a")
        deputy.wait_for_selector("#form-decline")
        deputy.fill("#form-decline textarea[name=reason]", "Speak to the LADO first")
        deputy.click("#form-decline button[type=submit]")
        deputy.wait_for_selector("#state")
        assert "Declined by deputy1" in deputy.locator("#state").inner_text()
        assert deputy.locator("#form-approve").count() == 0

        dsl.goto(f"{srv.url}/queue")
        assert dsl.locator("#notice-badge").is_visible()
        dsl.click("#notices-link")
        told = dsl.locator("#notices li.declined")
        assert "Speak to the LADO first" in told.inner_text()
        told.locator("a").click()
        dsl.wait_for_selector("#four-eyes-history")
        history = dsl.locator("#four-eyes-history").inner_text()
        assert "asked to open the metadata" in history and "declined" in history
        assert "Speak to the LADO first" in history
        assert dsl.locator("form.unlock").is_visible()  # may ask again
        assert dsl.locator("#form-police").is_visible()  # and may record the referral alone
        dsl.screenshot(path=str(ARTIFACTS / "console-four-eyes-declined.png"), full_page=True)
        dctx.close()
        pctx.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_no_contacts_banner_is_visible_in_chromium(browser, world, tmp_path):
    with ConsoleServer(world.db_path, tmp_path) as srv:
        ctx, page = browser_login(browser, srv.url, "dslsouth")
        banner = page.locator("#no-contacts-south")
        assert banner.is_visible()
        assert "vigil-collector site contacts --site south" in banner.inner_text()
        page.screenshot(path=str(ARTIFACTS / "console-no-contacts-banner.png"))
        ctx.close()
