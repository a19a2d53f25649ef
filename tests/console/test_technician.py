"""Technicians in the browser: enrolment tokens (create, list, revoke; the secret shown once),
devices with silent and never-seen ones first and highlighted, source health per device,
rule versions, and anonymised examples of what misfired. Never capture content or a pupil."""

from __future__ import annotations

import re

from collector.store.base import Heartbeat, SourceHealth
from collector.store.repos.devices import hash_token

from .conftest import post
from .support import audit_rows, connect, seed_capture

DAY = 24 * 3600 * 1000


def _token_rows(world) -> list[dict]:  # type: ignore[no-untyped-def]
    with connect(world.db) as conn:
        return [dict(zip(r.keys(), r, strict=True)) for r in conn.execute(
            "SELECT id, token_hash, site_id, group_name, max_uses, revoked_at, created_by "
            "FROM enrol_tokens ORDER BY created_at")]


def test_technician_creates_a_token_and_sees_its_secret_once(client_for, world):
    tech = client_for("tech1")
    r = post(tech, "/tokens", {"site": "north", "group": "year-10", "uses": "25",
                               "days": "7"}, "/devices")
    assert r.status_code == 200
    secret = re.search(r'<code id="token-secret">(vgl_[^<]+)</code>', r.text)
    assert secret, r.text
    (row,) = _token_rows(world)
    assert row["token_hash"] == hash_token(secret.group(1)) and row["max_uses"] == 25
    assert row["created_by"] == "tech1" and row["site_id"] == "north"
    assert secret.group(1) not in str(row)
    assert r.headers["cache-control"] == "no-store"
    # listed afterwards, without the secret
    again = tech.get("/devices").text
    assert row["id"] in again and "0 / 25" in again and secret.group(1) not in again
    (audit,) = audit_rows(world.db, "token.create")
    assert audit["actor"] == "tech1" and audit["site_id"] == "north"
    assert secret.group(1) not in str(audit_rows(world.db))


def test_bad_token_input_is_a_clear_400_and_other_schools_are_not_found(client_for, world):
    tech = client_for("tech1")
    for data, words in (({"group": "", "uses": "5", "days": "7"}, "group"),
                        ({"group": "y9", "uses": "0", "days": "7"}, "uses"),
                        ({"group": "y9", "uses": "5", "days": "900"}, "days")):
        r = post(tech, "/tokens", {"site": "north", **data}, "/devices")
        assert r.status_code == 400 and words in r.text
    r = post(tech, "/tokens", {"site": "south", "group": "y9", "uses": "5", "days": "7"},
             "/devices")
    assert r.status_code == 404
    assert _token_rows(world) == []
    dsl = client_for("dsl1")
    assert post(dsl, "/tokens", {"site": "north", "group": "y9", "uses": "5", "days": "7"},
                "/queue").status_code == 403


def test_technician_revokes_a_token(client_for, world):
    tech = client_for("tech1")
    post(tech, "/tokens", {"site": "north", "group": "year-9", "uses": "3", "days": "1"},
         "/devices")
    (row,) = _token_rows(world)
    r = post(tech, f"/tokens/{row['id']}/revoke", {}, "/devices")
    assert r.status_code == 303 and r.headers["location"].startswith("/devices?revoked=")
    page = tech.get(r.headers["location"]).text
    assert f"Token {row['id']} revoked" in page
    line = page[page.index(f'data-token="{row["id"]}"'):]
    assert 'class="token-state">revoked' in line[:line.index("</tr>")]
    assert _token_rows(world)[0]["revoked_at"] is not None
    assert audit_rows(world.db, "token.revoke")[0]["actor"] == "tech1"
    # revoking twice is a 400; another school's token is "not found"
    assert post(tech, f"/tokens/{row['id']}/revoke", {}, "/devices").status_code == 400
    with connect(world.db) as conn:
        conn.execute("INSERT INTO enrol_tokens (id, token_hash, site_id, group_name, "
                     "expires_at, created_by, created_at) VALUES "
                     "('tok-south', 'h', 'south', 'y', ?, 'cli', 1)",
                     (int(world.clock.now * 1000) + DAY,))
    assert post(tech, "/tokens/tok-south/revoke", {}, "/devices").status_code == 404
    assert [t["revoked_at"] for t in _token_rows(world) if t["id"] == "tok-south"] == [None]


def test_devices_never_seen_and_silent_come_first_and_sort(client_for, world):
    now = int(world.clock.now * 1000)
    with connect(world.db) as conn:
        conn.execute("UPDATE devices SET last_seen_at = NULL WHERE id = ?",
                     (world.devices["bare"],))
        conn.execute("INSERT INTO devices (id, site_id, group_name, hostname, os, cert_serial, "
                     "enrolled_at, last_seen_at) VALUES ('old1', 'north', 'y9', 'NH-LAP-099', "
                     "'linux', 'c', 1, ?)", (now - 10 * DAY,))
    tech = client_for("tech1")
    html = tech.get("/devices").text
    order = re.findall(r'data-state="(\w+)"><td class="state">', html)
    assert order == ["never", "silent", "ok"]
    hosts = re.findall(r'<td class="hostname">([^<]+)</td>', html)
    assert hosts == ["NH-LAP-002", "NH-LAP-099", "NH-LAP-001"]
    assert "SA-LAP-001" not in html  # another school's
    assert '<strong id="count-never">1</strong>' in html
    assert '<strong id="count-silent">1</strong>' in html
    by_name = tech.get("/devices?sort=hostname&dir=desc").text
    assert re.findall(r'<td class="hostname">([^<]+)</td>', by_name) == [
        "NH-LAP-099", "NH-LAP-002", "NH-LAP-001"]
    assert 'aria-sort="descending"' in by_name
    assert tech.get("/devices?sort=secret").status_code == 400
    assert audit_rows(world.db, "devices.view")[-1]["actor"] == "tech1"


def test_source_health_from_the_heartbeat_is_shown_per_device(client_for, world):
    now = int(world.clock.now * 1000)
    world.store.apply_heartbeats([Heartbeat(
        world.devices["it1"], now, "1.4.0", 7, 0, 0, {}, "pupil1", "NH-LAP-001", "linux",
        (SourceHealth("window", "running", now - 1000, 0, ""),
         SourceHealth("keys", "failed", 0, 3,
                      "RECORD extension missing for /home/pupil1/.Xauthority")))])
    html = client_for("tech1").get("/devices").text
    row = next(line for line in html.splitlines() if "NH-LAP-001" in line)
    assert 'data-state="attention"' in row
    assert 'class="source source-ok"' in row and "window: running" in row
    assert "keys: failed (3 restarts)" in row and "RECORD extension missing" in row
    assert "pupil1" not in html  # the home folder names the pupil: masked
    assert "/home/…/.Xauthority" in row


def test_misfire_examples_are_anonymised(client_for, world):
    secrets_ = []
    for i, who in enumerate(("p1", "p2", "p3", "p1")):
        ctx = f"i have the best skill in year 9 call me 0770090{i} says {who}"
        secrets_.append(ctx)
        with connect(world.db) as conn:
            seed_capture(conn, site_id="north", device_id=world.devices["it1"], os_user=who,
                         rule_id="violence.kill", category="violence", match="kill",
                         context=ctx, window_title=f"Chat with Sam {i}",
                         status="false_positive")
    # a phrase from two pupils only: withheld
    for who in ("p1", "p2"):
        with connect(world.db) as conn:
            seed_capture(conn, site_id="north", device_id=world.devices["it1"], os_user=who,
                         rule_id="violence.kill", category="violence", match="kill 07700900",
                         context="kill 07700900 now", status="false_positive")
    # restricted items are never used
    with connect(world.db) as conn:
        seed_capture(conn, site_id="north", device_id=world.devices["it1"], os_user="p4",
                     rule_id="csam.terms", category="csam", severity=5, match="CSAM-SECRET",
                     context="CSAM-SECRET", status="false_positive")
    html = client_for("tech1").get("/rules/stats").text
    table = html[html.index('id="misfires"'):html.index("</table>", html.index('id="misfires"'))]
    assert "<mark>kill</mark>" in table and "yes: part of a longer word" in table
    assert "<td>4</td>" in table  # items
    assert "Other phrases, each from fewer than 3 pupils: withheld</td><td>2</td>" in table
    assert "07700900" not in html and "kill ########" not in table
    for text in [*secrets_, "skill", "Chat with Sam", "p1", "p2", "NH-LAP-001", "IT1",
                 "CSAM-SECRET", "Alex Smith"]:
        assert text not in table, text
    assert "at least 3 different pupils" in html
    assert audit_rows(world.db, "rules.stats_view")[0]["actor"] == "tech1"


def test_rule_versions_show_how_many_devices_run_them(client_for, world):
    now = int(world.clock.now * 1000)
    with connect(world.db) as conn:
        for v, active in ((1, 0), (2, 1)):
            conn.execute("INSERT INTO rule_versions (version, content_hash, bundle, created_at, "
                         "published_by, active, note) VALUES (?, ?, ?, ?, 'cli:tech', ?, ?)",
                         (v, f"{v:064x}", b"\x00", now - v, active, f"note {v}"))
        conn.execute("UPDATE devices SET rules_version = 2")
    html = client_for("tech1").get("/rules/stats").text
    v2 = html[html.index('data-version="2"'):]
    assert '<td class="running">2</td>' in v2[:v2.index("</tr>")]  # two north devices
    assert html.index('data-version="2"') < html.index('data-version="1"')
    assert audit_rows(world.db, "rules.list")[0]["actor"] == "tech1"
