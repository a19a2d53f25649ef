"""The technician's device-health page shows what each agent had to drop, by reason.

A drop is a safety signal (the spool filled during an outage); it must be visible where a
technician looks, not only in the CLI.
"""

from __future__ import annotations

import json

from .support import connect, device


def test_devices_page_shows_drop_counts_by_reason(client_for, world):
    with connect(world.db) as conn:
        conn.execute("UPDATE devices SET drops = ?, spool_depth = 12 WHERE id = ?",
                     (json.dumps({"spool_full": 7, "rejected:too_big": 1}),
                      world.devices["it1"]))
    page = client_for("tech1").get("/devices")
    assert page.status_code == 200
    row = next(line for line in page.text.splitlines() if "NH-LAP-001" in line)
    assert "spool_full 7" in row and "rejected:too_big 1" in row


def test_devices_page_says_none_when_nothing_was_dropped(client_for, world):
    page = client_for("tech1").get("/devices")
    row = next(line for line in page.text.splitlines() if "NH-LAP-001" in line)
    assert '<td class="drops">none</td>' in row


def test_devices_without_a_room_come_first_on_every_backend(world):
    """SQLite sorts NULL first, PostgreSQL last unless told: the two must not differ."""
    rows = world.store.site_devices(["north"])
    assert [r["hostname"] for r in rows] == ["NH-LAP-002", "NH-LAP-001"]  # no room, then IT1


def test_weekly_report_lists_never_seen_devices_first(client_for, world):
    """The weekly summary shows at most 50 silent devices: a device that never called in is
    the most silent of all and must not be the one cut off (PostgreSQL sorted it last)."""
    now = int(world.clock.now * 1000)
    with connect(world.db) as conn:
        device(conn, "north", "NH-NEVER", last_seen_at=None)
        device(conn, "north", "NH-QUIET", last_seen_at=now - 5 * 86400_000)
    report = world.store.silent_devices("north", now - 3 * 86400_000)
    assert [d["hostname"] for d in report] == ["NH-NEVER", "NH-QUIET"]
    silent = world.store.list_devices(silent_since_ms=now)
    assert [d.hostname for d in silent][:2] == ["NH-NEVER", "NH-QUIET"]
