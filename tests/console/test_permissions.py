"""Every page against every role: who gets in, who is refused (and the refusal is audited)."""

from __future__ import annotations

import pytest

from .conftest import post
from .support import audit_rows, connect, seed_capture

PAGES = ["/queue", "/queue/rows", "/captures/{qid}", "/approvals", "/devices", "/rules/stats",
         "/exports", "/exports/incident-log.csv", "/exports/incident-log.html",
         "/exports/cpoms.csv", "/reports/weekly", "/reports/annual"]
ALLOWED = {
    "dsl1": {"/queue", "/queue/rows", "/captures/{qid}", "/approvals", "/exports",
             "/exports/incident-log.csv", "/exports/incident-log.html", "/exports/cpoms.csv",
             "/reports/weekly", "/reports/annual"},
    "tech1": {"/devices", "/rules/stats"},
    "gov1": {"/reports/annual"},
    "trust1": {"/reports/weekly", "/reports/annual"},
}
ALLOWED["deputy1"] = ALLOWED["dsl1"]


@pytest.mark.parametrize("who", sorted(ALLOWED))
def test_permission_matrix(client_for, world, who):
    with connect(world.db) as conn:
        qid = seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                           match="matrix-secret")
    c = client_for(who)
    refused = 0
    for page in PAGES:
        r = c.get(page.format(qid=qid))
        if page in ALLOWED[who]:
            assert r.status_code == 200, (who, page, r.status_code)
        else:
            assert r.status_code == 403, (who, page, r.status_code)
            assert "matrix-secret" not in r.text
            refused += 1
    assert len([a for a in audit_rows(world.db, "access.refused") if a["actor"] == who]) \
        == refused


def test_static_files_are_served_with_csp(app):
    from starlette.testclient import TestClient
    with TestClient(app, base_url="https://testserver") as c:
        js = c.get("/static/console.js")
        css = c.get("/static/console.css")
    assert js.status_code == 200 and "queue-rows" in js.text
    assert css.status_code == 200 and "content-security-policy" in css.headers


def test_technician_assigns_rooms_in_the_console(client_for, world):
    tech = client_for("tech1")
    dev = world.devices["bare"]
    r = post(tech, f"/devices/{dev}/room", {"room": "Library <b>"}, "/devices")
    assert r.status_code == 303
    html = tech.get("/devices").text
    assert 'value="Library &lt;b&gt;"' in html
    with connect(world.db) as conn:
        assert conn.execute("SELECT room FROM devices WHERE id = ?", (dev,)).fetchone()[0] \
            == "Library <b>"
    assert audit_rows(world.db, "device.room")[0]["actor"] == "tech1"
    # another school's device, and a DSL, are refused
    assert post(tech, f"/devices/{world.devices['south']}/room", {"room": "x"},
                "/devices").status_code == 404
    dsl = client_for("dsl1")
    assert post(dsl, f"/devices/{dev}/room", {"room": "x"}, "/queue").status_code == 403


def test_audit_log_never_holds_capture_content(client_for, world):
    secrets_ = {"match": "AUDIT-MATCH-SECRET", "context": "AUDIT-CONTEXT-SECRET",
                "window_title": "AUDIT-TITLE-SECRET"}
    with connect(world.db) as conn:
        qid = seed_capture(conn, site_id="north", device_id=world.devices["it1"], **secrets_)
        police = seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                              category="csam", severity=5, match="AUDIT-CSAM-SECRET")
    dsl, deputy = client_for("dsl1"), client_for("deputy1")
    for url in ("/queue", f"/captures/{qid}", "/exports/incident-log.csv",
                "/exports/cpoms.csv", "/exports/incident-log.html", f"/captures/{police}"):
        assert dsl.get(url).status_code == 200
    post(dsl, f"/captures/{qid}/act", {"op": "note", "note": "AUDIT-NOTE"}, "/queue")
    post(dsl, f"/captures/{police}/unlock", {"reason": "referral"}, "/queue")
    with connect(world.db) as conn:
        uid = conn.execute("SELECT id FROM console_unlocks").fetchone()[0]
    post(deputy, f"/approvals/{uid}/approve", {}, "/approvals")
    dsl.get(f"/captures/{police}")
    client_for("tech1").get(f"/captures/{qid}")
    rows = audit_rows(world.db)
    assert len(rows) > 12
    dump = repr(rows)
    for secret in [*secrets_.values(), "AUDIT-CSAM-SECRET", "AUDIT-NOTE"]:
        assert secret not in dump


def test_audit_rows_cannot_be_changed(world):
    with connect(world.db) as conn:
        conn.execute("INSERT INTO audit (at, actor, action) VALUES (1, 'x', 'y')")
        with pytest.raises(world.db_error, match="append-only"):
            conn.execute("UPDATE audit SET actor = 'z'")
        with pytest.raises(world.db_error, match="append-only"):
            conn.execute("DELETE FROM audit")
    assert [r["actor"] for r in audit_rows(world.db)] == ["x"]


def test_technician_sees_tokens_and_rule_versions_without_secrets(client_for, world):
    now = int(world.clock.now * 1000)
    with connect(world.db) as conn:
        conn.execute("INSERT INTO enrol_tokens (id, token_hash, site_id, group_name, max_uses, "
                     "uses, expires_at, created_by, created_at) VALUES "
                     "('tok-1', 'HASH-SECRET', 'north', 'year-9', 30, 2, ?, 'cli:root', ?)",
                     (now + 86400_000, now))
        conn.execute("INSERT INTO enrol_tokens (id, token_hash, site_id, group_name, "
                     "expires_at, created_by, created_at) VALUES "
                     "('tok-south', 'H2', 'south', 'y', ?, 'cli:root', ?)", (now + 1, now))
    world.store.add_rule_version(3, "abcdef0123456789ff", b"\x00", "cli:tech",
                                 "added bullying terms", now)
    tech = client_for("tech1")
    devices = tech.get("/devices").text
    assert "tok-1" in devices and "2 / 30" in devices and "active" in devices
    assert "HASH-SECRET" not in devices and "tok-south" not in devices
    rules = tech.get("/rules/stats").text
    assert "added bullying terms" in rules and "abcdef0123456789" in rules
