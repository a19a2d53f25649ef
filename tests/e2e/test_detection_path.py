"""Lines the phrase list alone misses reach the DSL's queue, each with the reason it fired.

A real ``vigil-agent`` on Xvfb + openbox reads keys typed by ``xdotool`` into a real xterm and
runs the shipped detector (streaming phrases on every key; the context layer and the learned
scorer at each boundary, in its worker thread). The captures cross real mTLS gRPC into a real
collector, and the DSL reads the reasons on the capture page in real Chromium. A sentence
that matches nothing is typed as well and must appear in nothing either program wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

import rules
from rules.engine import Detector
from rules.scorer import load_scorer
from tests.console.support import CHROMIUM, CHROMIUM_ARGS, browser_login
from tests.e2e.test_full_path import PASSWORD, PRIVATE, _files_under, dsl_and_token, enrolled_agent
from tests.support.collector import start_collector
from tests.support.x11 import XDesktop, have_x_tools, wait_for

pytestmark = [
    pytest.mark.x11,
    pytest.mark.browser,
    pytest.mark.skipif(not have_x_tools(), reason="needs Xvfb, openbox, xterm, xdotool"),
]

#: (what the pupil types, the category the DSL must see). None of these is a phrase of the
#: library: the streaming matcher alone does not fire on them (checked below).
LINES = [
    # obfuscated: masked letters and text-speak
    ("ngl im so done, gonna s*icide tonite b4 anyone wakes up", "suicide"),
    # embedded in homework
    ("for the geography project we need the river map by friday. honestly nobody would even "
     "notice if i was gone, i've been planning how", "suicide"),
    # Welsh, in words the context layer weighs (the keystroke matcher has no phrase for it;
    # "dw i ddim eisiau byw ddim mwy" is a phrase of the library now, so it no longer served)
    ("sori mam, dw i wedi blino ar fyw a fydda i ddim yma erbyn y bore", "suicide"),
]
WINDOW = "Notes"


def test_premises_the_phrase_layer_alone_misses_these_and_the_detector_does_not() -> None:
    library = rules.load_library(rules.DEFAULT_LIBRARY)
    det = Detector(library, load_scorer())
    for text, category in LINES:
        assert not [h for h in library.scan(text) if h.rule.category == category], text
        assert category in {h.rule.category for h in det.detect(text)}, text
    assert det.detect(PRIVATE) == []


def test_obfuscated_embedded_and_welsh_lines_reach_the_queue_with_their_reason(
        tmp_path: Path) -> None:
    c = start_collector(tmp_path, console=True, rules_dir=rules.DEFAULT_LIBRARY)
    agent_dir = tmp_path / "agent"
    try:
        token = dsl_and_token(c.data_dir)
        with XDesktop() as x:
            with enrolled_agent(tmp_path, c, token, x) as agent:
                x.open_xterm(WINDOW)
                x.type_text(PRIVATE)
                x.key("Return")
                for text, _ in LINES:
                    x.type_text(text)
                    x.key("Return")
                rows = wait_for(lambda: (lambda r: r if len(r) >= len(LINES) else None)(
                    c.query("SELECT context, category, reasons, rule_id, queue_item_id "
                            "FROM captures WHERE source = 'keys' ORDER BY time_ms")),
                    60, what="a capture for every line")
                agent.stop()
            agent_log = agent.output

        by_line = {}
        for context, category, reasons, rule_id, item in rows:
            for text, _want in LINES:
                if context and context[:40] in text:
                    by_line.setdefault(text, []).append((category, json.loads(reasons),
                                                         rule_id, item))
        for text, want in LINES:
            got = by_line.get(text, [])
            assert any(cat == want for cat, *_ in got), (text, got)
            for _cat, reasons, _rule, _item in got:
                assert reasons, f"a capture without a reason for {text!r}"

        # the DSL reads why it fired on the capture page
        item_id = next(item for cat, _r, _rule, item in by_line[LINES[0][0]] if cat == "suicide")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ctx, page = browser_login(browser, c.console_url.rstrip("/"), "dsl", PASSWORD)
            page.goto(f"{c.console_url.rstrip('/')}/captures/{item_id}")
            page.wait_for_selector("ul.reasons li")
            why = page.locator("div.why").first.inner_text()
            assert "Why it fired" in why and ("model" in why or "'" in why), why
            ctx.close()
            browser.close()
    finally:
        c.stop()

    secret = PRIVATE.encode()
    assert [str(p) for p in _files_under(agent_dir, c.data_dir) if secret in p.read_bytes()] == []
    assert PRIVATE not in agent_log and PRIVATE not in c.log()
