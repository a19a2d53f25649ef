"""The dashboard in real headless Chromium, checked by looking at it: the bars' drawn heights
(bounding boxes) are in the ratio of the counts, and the pixels inside a bar are the colour
its legend promises. Screenshots are saved in test-artifacts/.

SQLite only: this is about what the browser draws; the same data on PostgreSQL is covered
by tests/console/test_dashboard.py."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from .support import CHROMIUM, CHROMIUM_ARGS, ConsoleServer, browser_login, connect, seed_capture

pytestmark = [pytest.mark.browser,
              pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DAY = 24 * 3600 * 1000


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _centre_colour(png: bytes) -> tuple[int, int, int]:
    img = Image.open(io.BytesIO(png)).convert("RGB")
    r, g, b = img.getpixel((img.width // 2, img.height // 2))  # type: ignore[misc]
    return int(r), int(g), int(b)


def _hex(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _close(a: tuple[int, int, int], b: tuple[int, int, int], tol: int = 12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def test_dsl_dashboard_charts_are_drawn_to_scale(browser, world, tmp_path):  # type: ignore[no-untyped-def]
    now = int(time.time() * 1000)
    with connect(world.db) as conn:
        for _ in range(6):
            seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                         category="bullying", rule_id="bullying.names", severity=2,
                         time_ms=now - 60_000)
        for _ in range(3):
            seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                         category="suicide", rule_id="suicide.intent", severity=5,
                         time_ms=now - 60_000)
        seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                     category="self_harm", severity=4, time_ms=now - 7 * DAY)
    with ConsoleServer(world.db, tmp_path) as srv:
        ctx, page = browser_login(browser, srv.url, "dsl1")
        csp: list[str] = []
        page.on("console", lambda m: csp.append(m.text)
                if "Content Security Policy" in m.text else None)
        page.goto(f"{srv.url}/dashboard")
        page.wait_for_selector("#chart-category rect.bar")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-dashboard.png"), full_page=True)

        def box(chart: str, key: str, col: int) -> dict[str, float]:
            b = page.locator(f'#{chart} rect.bar[data-key="{key}"][data-col="{col}"]'
                             ).bounding_box()
            assert b is not None, (chart, key, col)
            return b

        bullying, suicide = box("chart-category", "bullying", 11), \
            box("chart-category", "suicide", 11)
        self_harm = box("chart-category", "self_harm", 10)
        assert bullying["height"] > 20
        assert abs(bullying["height"] / suicide["height"] - 2.0) < 0.05
        assert abs(suicide["height"] / self_harm["height"] - 3.0) < 0.1
        # stacked: suicide sits directly on top of bullying in this week's bar
        assert abs((suicide["y"] + suicide["height"]) - bullying["y"]) < 1.5
        assert abs(bullying["x"] - suicide["x"]) < 0.5
        # and last week's bar is to the left of this week's
        assert self_harm["x"] < bullying["x"]
        # the severity chart: 6 of severity 2 is twice 3 of severity 5, drawn in their colours
        sev2, sev5 = box("chart-severity", "2", 11), box("chart-severity", "5", 11)
        assert abs(sev2["height"] / sev5["height"] - 2.0) < 0.05
        for key, colour in (("5", "#b00020"), ("2", "#3a7bd5")):
            bar = page.locator(f'#chart-severity rect.bar[data-key="{key}"][data-col="11"]')
            bar.scroll_into_view_if_needed()
            b = bar.bounding_box()
            assert b is not None
            shot = page.screenshot(clip={"x": b["x"] + 2, "y": b["y"] + 2,
                                         "width": max(2, b["width"] - 4),
                                         "height": max(2, b["height"] - 4)})
            assert _close(_centre_colour(shot), _hex(colour)), (key, _centre_colour(shot))
        # open severity-5 items: one bar, as tall as 3 on the axis of its own chart
        sev5_open = page.locator("#chart-sev5 rect.bar")
        assert sev5_open.count() == 1
        # the text alternative is there for a screen reader
        assert page.locator("#chart-category").get_attribute("role") == "img"
        assert "Bars per week" in (page.locator("#chart-category desc").text_content() or "")
        page.click("#box-category summary")
        row = page.locator('#table-category tr[data-key="bullying"]').inner_text()
        assert row.split()[-1] == "6"
        assert csp == []
        ctx.close()
