"""The technician's device-health page shows what each agent had to drop, by reason.

A drop is a safety signal (the spool filled during an outage); it must be visible where a
technician looks, not only in the CLI.
"""

from __future__ import annotations

import json

from .support import connect


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
