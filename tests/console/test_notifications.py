"""Notifications in the console (issue 14): a badge and a list of new severity 4-5 items,
four-eyes requests for me and items assigned to me, scoped to my sites; a banner on every page
while a site of mine has no DSL contacts; and the weekly summary sent by ``serve`` on a
schedule, once per site and week, driven here by a fake clock into a real SMTP server."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from pathlib import Path
from typing import Any

import pytest

from collector.config import load_config
from collector.services.weekly_schedule import WeeklySchedule, due_week
from collector.store.sqlite import SqliteStore

from .support import audit_rows, seed_capture
from .test_four_eyes import Inbox, inbox  # noqa: F401 (the fixture)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_badge_and_list_show_what_is_new_for_me_and_nothing_of_another_site(world, client_for):
    store = world.store
    now_ms = int(world.clock.now * 1000)
    urgent = seed_capture(store, site_id="north", device_id=world.devices["it1"], severity=5,
                          category="suicide", rule_id="suicide.intent", time_ms=now_ms)
    seed_capture(store, site_id="north", device_id=world.devices["it1"], severity=3,
                 time_ms=now_ms)
    seed_capture(store, site_id="south", device_id=world.devices["south"], severity=5,
                 category="suicide", rule_id="suicide.intent", time_ms=now_ms)
    dsl = client_for("dsl1")
    page = dsl.get("/queue").text
    assert '<span class="badge" id="notice-badge"' in page
    assert page.split('id="notice-badge"')[1].split(">")[1].startswith("1<")
    notes = dsl.get("/notifications").text
    assert notes.count('data-kind="urgent"') == 1 and f'href="/captures/{urgent}"' in notes
    assert "New severity 5 item" in notes and 'class="urgent unread"' in notes
    assert 'id="notice-badge"' not in dsl.get("/queue").text  # opened: nothing new since

    # an item assigned to me is listed (and counted again, being new since my last look)
    world.clock.now += 60
    store.db.execute("UPDATE queue_items SET assignee = 'dsl1', updated_at = ? WHERE id = ?",
                     (int(world.clock.now * 1000), urgent))
    assert 'id="notice-badge"' in dsl.get("/queue").text
    notes = dsl.get("/notifications").text
    assert 'data-kind="assigned"' in notes and "Assigned to you" in notes
    # another school's DSL sees only theirs; a technician gets no capture notifications
    south = client_for("dslsouth").get("/notifications").text
    assert south.count('data-kind="urgent"') == 1 and f'href="/captures/{urgent}"' not in south
    assert 'data-kind="urgent"' not in client_for("tech1").get("/notifications").text
    assert [r["actor"] for r in audit_rows(store, "notifications.view")][:1] == ["dsl1"]


def test_a_site_without_dsl_contacts_shows_a_banner_on_every_page(world, client_for):
    south = client_for("dslsouth")  # South Academy has no DSL contacts
    for path in ("/queue", "/notifications", "/reports/weekly"):
        page = south.get(path).text
        assert 'id="no-contacts-south"' in page, path
        assert "urgent alerts are not emailed to anyone" in page
        assert "vigil-collector site contacts --site south --email" in page
    assert 'id="no-contacts' not in client_for("dsl1").get("/queue").text  # north has some
    world.store.set_site_contacts("south", ["dsl@south.example"], None)
    assert 'id="no-contacts' not in south.get("/queue").text


def test_reports_keys_are_read_and_documented(tmp_path):
    (tmp_path / "collector.toml").write_text(
        '[reports]\nweekly_day = "friday"\nweekly_hour = 15\nweekly_check_seconds = 5\n')
    cfg = load_config(data_dir=tmp_path)
    assert (cfg.reports.weekly_day, cfg.reports.weekly_hour) == ("friday", 15)
    assert cfg.reports.weekly_check_seconds == 5.0
    text = DOCS.read_text()
    for key in ("weekly_day", "weekly_hour", "weekly_check_seconds"):
        assert f"`{key}`" in text
    with pytest.raises(ValueError, match="weekly_day"):
        due_week(0, "someday", 7, "Europe/London")


def test_a_collector_started_days_after_the_due_time_waits_for_next_week() -> None:
    # Monday 30 Nov 2026 07:00 is the due time (ISO week 49)
    assert due_week(_ms(2026, 11, 30, 6, 59), "monday", 7, "Europe/London") is None
    assert due_week(_ms(2026, 11, 30, 7, 0), "monday", 7, "Europe/London") == "2026-W49"
    assert due_week(_ms(2026, 12, 1, 6, 0), "monday", 7, "Europe/London") == "2026-W49"
    # installed on Thursday: no surprise summary now; the next one is Monday's
    assert due_week(_ms(2026, 12, 3, 10, 0), "monday", 7, "Europe/London") is None
    assert due_week(_ms(2026, 12, 7, 7, 30), "monday", 7, "Europe/London") == "2026-W50"


def _ms(y: int, m: int, d: int, h: int, minute: int = 0) -> int:
    from zoneinfo import ZoneInfo

    return int(dt.datetime(y, m, d, h, minute, tzinfo=ZoneInfo("Europe/London")).timestamp()
               * 1000)


class FakeClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def _runner() -> Any:
    lock = threading.Lock()

    async def run(fn: Any, *args: Any) -> Any:
        def locked() -> Any:
            with lock:
                return fn(*args)
        return await asyncio.to_thread(locked)
    return run


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_serve_sends_the_weekly_summary_once_per_site_and_week(world, inbox: Inbox):  # noqa: F811
    """Two collectors (two schedules, each with its own store connection) share one store:
    Monday 07:00 comes, each site with contacts gets exactly one summary; nothing more that
    week, however often either checks; the next Monday, one more."""
    world.store.set_site_contacts("south", ["head@south.example"], None)
    clock = FakeClock(_ms(2026, 11, 23, 6, 59))  # a Monday, a minute early
    stores = [SqliteStore(world.db_path, world.data_dir) for _ in range(2)]
    schedules = [WeeklySchedule(s, s.is_leader, _runner(), inbox.smtp(), day="monday", hour=7,
                                timezone="Europe/London", check_seconds=0.01,
                                public_url="https://vigil.north.example", clock=clock)
                 for s in stores]

    async def ticks() -> int:
        return sum(await asyncio.gather(*(s.tick() for s in schedules)))

    try:
        assert asyncio.run(ticks()) == 0 and inbox.messages == []
        clock.ms = _ms(2026, 11, 23, 7, 0)
        assert asyncio.run(ticks()) == 2
        got = inbox.wait(2)
        assert sorted(to[0] for to, _ in got) == ["dsl@north.example", "head@south.example"]
        _, msg = next(m for m in got if m[0] == ["dsl@north.example"])
        assert msg["Subject"] == "Vigil weekly summary: North High School"
        body = msg.get_payload(decode=True).decode()  # type: ignore[union-attr]
        assert "https://vigil.north.example/queue" in body
        for hours in (1, 30, 100):  # later that week, either collector: nothing more
            clock.ms = _ms(2026, 11, 23, 7) + hours * 3600_000
            assert asyncio.run(ticks()) == 0
        clock.ms = _ms(2026, 11, 30, 7, 5)  # next Monday
        assert asyncio.run(ticks()) == 2
        assert len(inbox.wait(4)) == 4
    finally:
        for s in stores:
            s.close()
    sent = audit_rows(world.store, "report.weekly")
    assert len(sent) == 4 and all(r["actor"] == "system" for r in sent)
    assert [r["week"] for r in world.store.weekly_sends("north")] == ["2026-W48", "2026-W49"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_failed_weekly_send_is_retried_and_sent_once(world, inbox: Inbox):  # noqa: F811
    clock = FakeClock(_ms(2026, 11, 23, 8))
    smtp = inbox.smtp()
    dead = type(smtp)(host="127.0.0.1", port=1, sender=smtp.sender)  # nothing listens
    store = SqliteStore(world.db_path, world.data_dir)
    try:
        failing = WeeklySchedule(store, store.is_leader, _runner(), dead, day="monday", hour=7,
                                 timezone="Europe/London", check_seconds=0.01, clock=clock)
        assert asyncio.run(failing.tick()) == 0
        assert audit_rows(world.store, "report.weekly_failed")
        working = WeeklySchedule(store, store.is_leader, _runner(), smtp, day="monday", hour=7,
                                 timezone="Europe/London", check_seconds=0.01, clock=clock)
        assert asyncio.run(working.tick()) == 1
        assert asyncio.run(working.tick()) == 0
        assert [to for to, _ in inbox.wait(1)] == [["dsl@north.example"]]
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_serve_loop_runs_the_schedule(world, inbox: Inbox):  # noqa: F811
    """``run_forever`` (what serve starts) sends once the fake clock reaches the due time."""
    clock = FakeClock(_ms(2026, 11, 23, 6, 0))
    store = SqliteStore(world.db_path, world.data_dir)
    sched = WeeklySchedule(store, store.is_leader, _runner(), inbox.smtp(), day="monday",
                           hour=7, timezone="Europe/London", check_seconds=0.01, clock=clock)

    async def scenario() -> None:
        task = asyncio.create_task(sched.run_forever())
        await asyncio.sleep(0.1)
        assert inbox.messages == []
        clock.ms = _ms(2026, 11, 23, 7, 30)
        await asyncio.to_thread(inbox.wait, 1)
        await asyncio.sleep(0.1)
        task.cancel()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
    assert len(inbox.messages) == 1
