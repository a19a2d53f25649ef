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
