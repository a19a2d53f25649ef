"""End to end in real headless Chromium (Playwright) against the console under uvicorn/HTTPS.

The server runs with TLS (self-signed cert from ``cryptography``; the browser context sets
``ignore_https_errors``), so the real Secure/__Host- cookies are exercised.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from collector.store.screenshots import ensure_key, write_screenshot

from .support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ConsoleServer,
    browser_login,
    connect,
    seed_capture,
    tiny_png,
)

pytestmark = pytest.mark.browser

XSS_TITLE = '<script>alert("xss")</script> "><img src=x onerror=alert(1)> - Chromium'
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_dsl_works_a_capture_from_arrival_to_closure(browser, world, tmp_path):
    now = int(time.time() * 1000)
    with connect(world.db) as conn:
        first = seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                             severity=3, match="hurt myself", time_ms=now - 60_000)
    with ConsoleServer(world.db, tmp_path) as srv:
        ctx, page = browser_login(browser, srv.url, "dsl1")
        dialogs: list[str] = []
        csp_errors: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: csp_errors.append(m.text)
                if "Content Security Policy" in m.text else None)
        assert page.url.endswith("/queue")
        row = page.locator(f'tr[data-id="{first}"]')
        assert "Alex Smith" in row.inner_text() and "IT1" in row.inner_text()

        # a new capture (with an attacker-controlled window title) arrives: no reload needed
        with connect(world.db) as conn:
            xss = seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                               severity=5, category="suicide", rule_id="suicide.intent",
                               match="end it all", window_title=XSS_TITLE, process="chromium",
                               time_ms=now)
        page.wait_for_selector(f'tr[data-id="{xss}"]', timeout=20_000)
        top = page.locator("#queue-rows tr").first
        assert top.get_attribute("data-id") == str(xss) and "PINNED" in top.inner_text().upper()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-queue.png"), full_page=True)

        # open it: the hostile title is inert, visible text
        page.click(f'tr[data-id="{xss}"] a')
        page.wait_for_selector("dd.title")
        assert page.locator("dd.title").inner_text() == XSS_TITLE
        assert page.locator("img[src=x]").count() == 0
        assert page.locator("dd.match").inner_text() == "end it all"

        # act, then close
        page.select_option("#form-act select[name=action]", "refer_head_of_year")
        page.fill("#form-act textarea[name=note]", "Spoke to Mr Brown (HoY)")
        page.click("#form-act button[type=submit]")
        page.wait_for_selector("#done")
        history = page.locator("#history").inner_text()
        assert "Referred to head of year / pastoral" in history and "Mr Brown" in history
        page.select_option("#form-act select[name=status]", "closed")
        page.fill("#form-act input[name=reason]", "Handled with head of year")  # severity 5
        page.click("#form-act button[type=submit]")
        page.wait_for_selector("#done")
        assert page.locator("#status").inner_text() == "Closed"

        page.goto(f"{srv.url}/queue")
        assert page.locator(f'tr[data-id="{xss}"]').count() == 0
        assert page.locator(f'tr[data-id="{first}"]').count() == 1
        assert dialogs == [] and csp_errors == []
        ctx.close()
    with connect(world.db) as conn:
        acts = [r[0] for r in conn.execute("SELECT action FROM audit WHERE actor = 'dsl1'")]
    assert {"login.ok", "queue.view", "capture.view", "capture.action",
            "capture.status"} <= set(acts)


def test_technician_is_refused_capture_content(browser, world, tmp_path):
    with connect(world.db) as conn:
        qid = seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                           match="private disclosure", time_ms=int(time.time() * 1000))
    with ConsoleServer(world.db, tmp_path) as srv:
        ctx, page = browser_login(browser, srv.url, "tech1")
        assert page.url.endswith("/devices")
        assert "NH-LAP-001" in page.content()
        resp = page.goto(f"{srv.url}/captures/{qid}")
        assert resp is not None and resp.status == 403
        assert "not allowed" in page.locator("#error-message").inner_text()
        assert "private disclosure" not in page.content()
        resp = page.goto(f"{srv.url}/queue")
        assert resp is not None and resp.status == 403
        assert "private disclosure" not in page.content()
        ctx.close()


def test_dsl_opens_a_screenshot_and_the_view_is_audited(browser, world, tmp_path):
    key = ensure_key(world.data_dir)
    with connect(world.db) as conn:
        qid = seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                           screenshot_path="pending", time_ms=int(time.time() * 1000))
        cid = conn.execute("SELECT id FROM captures WHERE queue_item_id = ?", (qid,)).fetchone()[0]
        conn.execute("UPDATE captures SET screenshot_path = ? WHERE id = ?",
                     (write_screenshot(world.data_dir, cid, tiny_png(40, 30), key), cid))
    with ConsoleServer(world.db, world.data_dir) as srv:
        ctx, page = browser_login(browser, srv.url, "dsl1")
        page.goto(f"{srv.url}/captures/{qid}")
        with connect(world.db) as conn:
            assert conn.execute("SELECT count(*) FROM audit WHERE action = 'screenshot.view'"
                                ).fetchone()[0] == 0  # not loaded until the DSL asks
        page.click("details.shot summary")
        page.wait_for_function("() => { const i = document.querySelector('details.shot img');"
                               " return i && i.complete && i.naturalWidth === 40; }",
                               timeout=20_000)
        ctx.close()
    with connect(world.db) as conn:
        rows = conn.execute("SELECT actor, target FROM audit WHERE action = 'screenshot.view'"
                            ).fetchall()
    assert [tuple(r) for r in rows] == [("dsl1", f"capture:{cid}")]
