"""Wales (issue 14) in real headless Chromium: a Welsh DSP logs in, works the queue and a
capture page in Welsh; screenshots are saved under test-artifacts/."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from collector.services.estate import EstateService

from .support import CHROMIUM, CHROMIUM_ARGS, ConsoleServer, browser_login, connect, seed_capture

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_welsh_dsp_works_the_queue_and_a_capture_in_welsh(world: Any, tmp_path: Path) -> None:
    """SQLite only: the browser flow is the same on both backends (test_welsh.py runs the
    pages on both)."""
    now = int(time.time() * 1000)
    EstateService(world.store, lambda: now).set_wales("test", "north", True)
    with connect(world.db) as conn:
        conn.execute("UPDATE users SET language = 'cy' WHERE username = 'dsl1'")
        qid = seed_capture(conn, site_id="north", device_id=world.devices["it1"], severity=4,
                           match="hurt myself", time_ms=now - 60_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            with ConsoleServer(world.db, tmp_path) as srv:
                ctx, page = browser_login(browser, srv.url, "dsl1")
                assert page.url.endswith("/queue")
                assert page.locator("html").get_attribute("lang") == "cy"
                assert page.locator("h1").inner_text() == "Ciw diogelu"
                assert "(PDD)" in page.locator(".who").inner_text()
                row = page.locator(f'tr[data-id="{qid}"]')
                assert "Hunan-niweidio" in row.inner_text() and "Newydd" in row.inner_text()
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "console-welsh-queue.png"), full_page=True)

                page.click(f'tr[data-id="{qid}"] td a')
                page.wait_for_selector("#form-act")
                assert "Cofnodwch beth a wnaethoch" in page.content()
                page.select_option("#form-act select[name=action]", "refer_head_of_year")
                page.click("#form-act button[type=submit]")
                page.wait_for_selector("#done")
                assert page.locator("#done").inner_text() == "Wedi'i gadw."
                assert "Atgyfeiriwyd at bennaeth blwyddyn" in page.locator("#history").inner_text()
                page.screenshot(path=str(ARTIFACTS / "console-welsh-capture.png"),
                                full_page=True)

                # switch to English at the foot of the page: the same page, in English
                page.click("#language-en")
                page.wait_for_selector("#history")
                assert "Referred to head of year / pastoral" in page.locator(
                    "#history").inner_text()
                assert "(DSP)" in page.locator(".who").inner_text()
                ctx.close()
        finally:
            browser.close()
