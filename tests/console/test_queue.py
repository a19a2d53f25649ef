"""The queue: order, pins, filters, site scope, names and rooms, live refresh, permissions."""

from __future__ import annotations

import re

from .support import T0, audit_rows, connect, seed_capture

HOUR = 3600 * 1000


def _row_ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-id="(\d+)"', html)]


def test_pinned_then_priority_then_time(client_for, world):
    d = world.devices["it1"]
    with connect(world.db) as conn:
        low_new = seed_capture(conn, site_id="north", device_id=d, severity=2,
                               time_ms=T0 + 5 * HOUR)
        high_old = seed_capture(conn, site_id="north", device_id=d, severity=4, time_ms=T0)
        high_new = seed_capture(conn, site_id="north", device_id=d, severity=4,
                                time_ms=T0 + HOUR)
        pinned = seed_capture(conn, site_id="north", device_id=d, severity=5, priority=10,
                              time_ms=T0 - HOUR, category="suicide", rule_id="suicide.plan")
    page = client_for("dsl1").get("/queue").text
    assert _row_ids(page) == [pinned, high_new, high_old, low_new]
    first_row = page[page.index(f'data-id="{pinned}"') - 60:page.index(f'data-id="{high_new}"')]
    assert "pinned" in first_row and "Pinned" in first_row


def test_names_and_rooms_where_known_else_username_and_hostname(client_for, world):
    with connect(world.db) as conn:
        seed_capture(conn, site_id="north", device_id=world.devices["it1"], os_user="pupil1")
        seed_capture(conn, site_id="north", device_id=world.devices["bare"], os_user="jdoe9")
    page = client_for("dsl1").get("/queue").text
    assert "Alex Smith" in page and "IT1 · NH-LAP-001" in page
    assert "jdoe9" in page and "NH-LAP-002" in page


def test_dsl_sees_only_own_school(client_for, world):
    with connect(world.db) as conn:
        mine = seed_capture(conn, site_id="north", device_id=world.devices["it1"])
        seed_capture(conn, site_id="south", device_id=world.devices["south"],
                     match="south secret")
    page = client_for("dsl1").get("/queue?site=south").text
    assert _row_ids(page) == [mine]
    assert "south secret" not in page


def test_filters(client_for, world):
    d, bare = world.devices["it1"], world.devices["bare"]
    with connect(world.db) as conn:
        a = seed_capture(conn, site_id="north", device_id=d, category="bullying", severity=2,
                         rule_id="bullying.x", time_ms=T0)
        b = seed_capture(conn, site_id="north", device_id=bare, os_user="jdoe9", severity=4,
                         time_ms=T0 + 48 * HOUR)
        c = seed_capture(conn, site_id="north", device_id=d, status="closed", severity=3)
    cl = client_for("dsl1")
    assert _row_ids(cl.get("/queue").text) == [b, a]  # default: open items only
    assert _row_ids(cl.get("/queue?status=closed").text) == [c]
    assert set(_row_ids(cl.get("/queue?status=all").text)) == {a, b, c}
    assert _row_ids(cl.get("/queue?category=bullying").text) == [a]
    assert _row_ids(cl.get("/queue?severity=4").text) == [b]
    assert _row_ids(cl.get("/queue?pupil=alex").text) == [a]      # by display name
    assert _row_ids(cl.get("/queue?pupil=jdoe9").text) == [b]     # by username
    assert _row_ids(cl.get("/queue?device=NH-LAP-002").text) == [b]
    assert _row_ids(cl.get("/queue?date_from=2026-11-17").text) == [b]
    assert _row_ids(cl.get("/queue?date_to=2026-11-16").text) == [a]
    assert _row_ids(cl.get("/queue?status=bogus&page=x").text) == [b, a]


def test_rows_fragment_changes_when_a_new_item_arrives(client_for, world):
    cl = client_for("dsl1")
    before = cl.get("/queue/rows")
    assert before.status_code == 200 and "Nothing here" in before.text
    with connect(world.db) as conn:
        qid = seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                           match="new arrival")
    after = cl.get("/queue/rows")
    assert after.headers["x-queue-digest"] != before.headers["x-queue-digest"]
    assert after.headers["x-queue-total"] == "1"
    assert f'data-id="{qid}"' in after.text and "new arrival" in after.text


def test_queue_view_is_audited(client_for, world):
    client_for("dsl1").get("/queue?category=bullying")
    rows = audit_rows(world.db, "queue.view")
    assert rows and rows[0]["actor"] == "dsl1" and "bullying" in rows[0]["detail"]


def test_other_roles_are_refused_the_queue(client_for, world):
    for who in ("tech1", "gov1", "trust1"):
        r = client_for(who).get("/queue")
        assert r.status_code == 403 and "cannot open this page" in r.text
        assert client_for(who).get("/queue/rows").status_code == 403
    refused = audit_rows(world.db, "access.refused")
    assert {r["actor"] for r in refused} == {"tech1", "gov1", "trust1"}


def test_illegal_imagery_rows_are_restricted(client_for, world):
    with connect(world.db) as conn:
        seed_capture(conn, site_id="north", device_id=world.devices["it1"], category="csam",
                     severity=5, match="SHOULD-NOT-SHOW", rule_id="csam.terms")
    page = client_for("dsl1").get("/queue").text
    assert "Restricted" in page and "SHOULD-NOT-SHOW" not in page and "Alex Smith" not in page
