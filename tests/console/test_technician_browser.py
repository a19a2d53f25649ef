"""A technician in real headless Chromium: creates an enrolment token (the secret shown once),
revokes it, and sees the never-seen device highlighted, checked by looking at the pixels of
the screenshot. Screenshots are saved in test-artifacts/.

SQLite only: this is about what the browser shows and does; the same flows on PostgreSQL are
covered by tests/console/test_technician.py."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from collector.store.repos.devices import hash_token

from .support import CHROMIUM, CHROMIUM_ARGS, ConsoleServer, browser_login, connect

pytestmark = [pytest.mark.browser,
              pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _left_colour(png: bytes) -> tuple[int, int, int]:
    """The colour a few pixels into a row's first cell (its background, not its text)."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    r, g, b = img.getpixel((3, 3))  # type: ignore[misc]
    return int(r), int(g), int(b)


def test_technician_creates_and_revokes_a_token(browser, world, tmp_path):  # type: ignore[no-untyped-def]
    with connect(world.db) as conn:
        conn.execute("UPDATE devices SET last_seen_at = NULL WHERE id = ?",
                     (world.devices["bare"],))
        conn.execute("UPDATE devices SET last_seen_at = ? WHERE id = ?",
                     (int(time.time() * 1000), world.devices["it1"]))
    with ConsoleServer(world.db, tmp_path) as srv:
        ctx, page = browser_login(browser, srv.url, "tech1")
        assert page.url.endswith("/devices")
        # the never-seen device is first and its row is drawn highlighted (pink), the
        # healthy one on the ordinary white
        first = page.locator("#devices tbody tr").first
        assert first.get_attribute("data-state") == "never"
        assert "NH-LAP-002" in first.inner_text()
        never = _left_colour(first.screenshot())
        ok = _left_colour(page.locator('#devices tr[data-state="ok"]').first.screenshot())
        assert abs(never[0] - 0xFD) < 8 and abs(never[1] - 0xE8) < 8, never
        assert ok[1] > 245 and ok[2] > 245, ok

        page.select_option("#token-form select[name=site]", "north")
        page.fill("#token-form input[name=group]", "year-7")
        page.fill("#token-form input[name=uses]", "40")
        page.fill("#token-form input[name=days]", "3")
        page.click("#token-form button[type=submit]")
        page.wait_for_selector("#token-secret")
        secret = page.locator("#token-secret").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-token-created.png"), full_page=True)
        with connect(world.db) as conn:
            (tid, stored) = conn.execute("SELECT id, token_hash FROM enrol_tokens").fetchone()
        assert stored == hash_token(secret)
        # the green "shown once" box is visibly there
        box = page.locator("#token-created").screenshot()
        assert _left_colour(box)[1] > _left_colour(box)[0]  # green-tinted

        page.goto(f"{srv.url}/devices")
        assert page.locator("#token-secret").count() == 0
        assert secret not in page.content()
        row = page.locator(f'#tokens tr[data-token="{tid}"]')
        assert row.locator(".token-state").inner_text() == "active"
        row.locator("button.revoke").click()
        page.wait_for_selector("#token-revoked")
        row = page.locator(f'#tokens tr[data-token="{tid}"]')
        assert row.locator(".token-state").inner_text() == "revoked"
        assert row.locator("button.revoke").count() == 0
        page.screenshot(path=str(ARTIFACTS / "console-token-revoked.png"), full_page=True)
        ctx.close()
    with connect(world.db) as conn:
        assert conn.execute("SELECT revoked_at FROM enrol_tokens").fetchone()[0] is not None
        acts = [r[0] for r in conn.execute("SELECT action FROM audit WHERE actor = 'tech1'")]
    assert {"devices.view", "token.create", "token.revoke"} <= set(acts)
