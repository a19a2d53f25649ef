"""Incident log, CPOMS CSV, weekly summary and the governors' annual report."""

from __future__ import annotations

import csv
import io

from collector.console.labels import category_label
from collector.services.exports import CPOMS_COLUMNS, INCIDENT_COLUMNS, neutralise

from .conftest import post
from .support import T0, audit_rows, connect, device, seed_capture


def _csv(text: str) -> list[list[str]]:
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:])))


def test_neutralise_formula_cells():
    assert neutralise("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")"
    for bad in ("+1", "-2+3", "@SUM(A1)", "\tx", "\rx"):
        assert neutralise(bad).startswith("'")
    assert neutralise("Alex Smith") == "Alex Smith" and neutralise(None) == ""


def test_incident_log_csv_has_the_seed_columns_and_is_safe(client_for, world):
    with connect(world.db) as conn:
        qid = seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                           window_title="=cmd|' /C calc'!A0", match="hurt myself")
        seed_capture(conn, site_id="north", device_id=world.devices["bare"], os_user="@evil",
                     category="csam", severity=5, match="NEVER-EXPORTED")
        seed_capture(conn, site_id="south", device_id=world.devices["south"], match="SOUTH")
    c = client_for("dsl1")
    post(c, f"/captures/{qid}/act", {"op": "action", "value": "inform_parents",
                                      "note": "-phoned mum"}, f"/captures/{qid}")
    r = c.get("/exports/incident-log.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = _csv(r.text)
    assert tuple(rows[0]) == INCIDENT_COLUMNS == ("Date and Time",
        "Name of Pupil or Staff Member", "Room and Device", "Details of Incident",
        "Actions and Reasons")
    assert len(rows) == 3
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["Date and Time"] == "16/11/2026 10:00"
    assert first["Name of Pupil or Staff Member"] == "Alex Smith"
    assert first["Room and Device"] == "IT1 / NH-LAP-001"
    assert "hurt myself" in first["Details of Incident"]
    assert "Informed parents / carers (-phoned mum)" in first["Actions and Reasons"]
    restricted = dict(zip(rows[0], rows[2], strict=True))
    assert restricted["Name of Pupil or Staff Member"] == "Restricted"
    assert "withheld by design" in restricted["Details of Incident"]
    # nobody recorded a referral: the record must not say one was made (issue 14)
    assert "Referred to police" not in r.text
    assert restricted["Actions and Reasons"] == "No action recorded"
    assert "NEVER-EXPORTED" not in r.text and "SOUTH" not in r.text
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@")), cell
    exp = audit_rows(world.db, "export.incident_log")
    assert exp and exp[0]["actor"] == "dsl1" and '"rows": 2' in exp[0]["detail"]


def test_printable_incident_log_and_date_range(client_for, world):
    with connect(world.db) as conn:
        seed_capture(conn, site_id="north", device_id=world.devices["it1"], match="early one")
        seed_capture(conn, site_id="north", device_id=world.devices["it1"], match="later one",
                     time_ms=T0 + 3 * 86400_000)
    html = client_for("dsl1").get("/exports/incident-log.html?from=2026-11-18").text
    for col in INCIDENT_COLUMNS:
        assert f"<th>{col}</th>" in html
    assert "later one" in html and "early one" not in html and "print-button" in html
    assert audit_rows(world.db, "export.incident_log_html")


def test_cpoms_csv(client_for, world):
    with connect(world.db) as conn:
        seed_capture(conn, site_id="north", device_id=world.devices["it1"])
    r = client_for("deputy1").get("/exports/cpoms.csv")
    rows = _csv(r.text)
    assert tuple(rows[0]) == CPOMS_COLUMNS
    rec = dict(zip(rows[0], rows[1], strict=True))
    assert rec["Student Username"] == "pupil1" and rec["Student Name"] == "Alex Smith"
    assert rec["Year Group"] == "Year 9" and rec["Incident Date"] == "16/11/2026"
    assert rec["Category"] == category_label("self_harm") and rec["Severity"] == "3"
    assert audit_rows(world.db, "export.cpoms")[0]["actor"] == "deputy1"


def test_exports_are_scoped_and_role_checked(client_for, world):
    assert client_for("dsl1").get("/exports/incident-log.csv?site=south").status_code == 404
    for who in ("tech1", "gov1", "trust1"):
        assert client_for(who).get("/exports/incident-log.csv").status_code == 403
        assert client_for(who).get("/exports/cpoms.csv").status_code == 403
    assert client_for("dsl1").get("/exports").status_code == 200


def test_weekly_summary(client_for, world):
    now = int(world.clock.now * 1000)
    with connect(world.db) as conn:
        device(conn, "north", "NH-SILENT", last_seen_at=now - 5 * 86400_000)
        seed_capture(conn, site_id="north", device_id=world.devices["it1"], severity=5,
                     category="suicide", time_ms=now - 86400_000)
        seed_capture(conn, site_id="north", device_id=world.devices["it1"], severity=2,
                     time_ms=now - 2 * 86400_000, status="closed")
        seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                     time_ms=now - 30 * 86400_000)  # older than a week, still open
    html = client_for("dsl1").get("/reports/weekly").text
    assert 'id="new-items">2<' in html and 'id="open-items">2<' in html
    assert "NH-SILENT" in html and 'id="silent-count">1<' in html
    assert "Alex Smith" not in html
    assert audit_rows(world.db, "report.weekly")
    assert client_for("trust1").get("/reports/weekly?site=south").status_code == 200
    assert client_for("dsl1").get("/reports/weekly?site=south").status_code == 404
    assert client_for("gov1").get("/reports/weekly").status_code == 403


def test_weekly_summary_withholds_small_counts_from_a_trust_lead(client_for, world):
    """The trust dashboard withholds counts of 1 and 2; the weekly page of the same school
    must not give them away. Its DSL still sees exact counts."""
    now = int(world.clock.now * 1000)
    with connect(world.db) as conn:
        for k in range(4):  # 4 bullying, 1 suicide this week: 5 new, 5 open
            seed_capture(conn, site_id="north", device_id=world.devices["it1"], severity=3,
                         category="bullying", time_ms=now - (k + 1) * 3600_000)
        seed_capture(conn, site_id="north", device_id=world.devices["it1"], severity=5,
                     category="suicide", time_ms=now - 86400_000)
    exact = client_for("dsl1").get("/reports/weekly?site=north").text
    assert 'id="new-items">5<' in exact and 'id="weekly-withheld"' not in exact
    lead = client_for("trust1").get("/reports/weekly?site=north")
    assert lead.status_code == 200
    html = lead.text
    assert 'id="weekly-withheld"' in html
    table = html[html.index('id="by-category"'):html.index('id="by-severity"')]
    # suicide's 1 is withheld, and so is bullying's 4: shown, it would give the 1 away
    # from the new-items total
    assert "withheld" in table and ">4<" not in table and ">1<" not in table
    assert 'id="new-items">5<' in html  # 5 is not a small number
    sev = html[html.index('id="by-severity"'):html.index('id="silent"')]
    assert ">1<" not in sev
    rows = audit_rows(world.db, "report.weekly")
    assert [r["site_id"] for r in rows][-2:] == ["north", "north"]  # both views audited


def test_annual_report_is_anonymous(client_for, world):
    with connect(world.db) as conn:
        for month in range(3):
            seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                         time_ms=T0 - month * 31 * 86400_000, match="SECRET-MATCH")
    r = client_for("gov1").get("/reports/annual?year=2026")
    assert r.status_code == 200
    html = r.text
    assert 'id="annual-total">3<' in html and "North High School" in html
    for private in ("Alex Smith", "pupil1", "SECRET-MATCH", "NH-LAP-001", "IT1"):
        assert private not in html
    cats = html[html.index('id="annual-category"'):]
    assert f"<td>{category_label('self_harm')}</td><td>3</td>" in cats
    with connect(world.db) as conn:
        seed_capture(conn, site_id="north", device_id=world.devices["it1"], category="grooming",
                     time_ms=T0)
    html = client_for("gov1").get("/reports/annual?year=2026").text
    # grooming 1 is withheld, and so is self-harm 3: the total (4) minus a shown 3 would
    # give the 1 away
    assert f"<td>{category_label('grooming')}</td><td>withheld</td>" in html
    assert f"<td>{category_label('self_harm')}</td><td>withheld</td>" in html
    assert audit_rows(world.db, "report.annual")[0]["actor"] == "gov1"
    assert client_for("gov1").get("/reports/annual?year=abc").status_code == 400
    assert client_for("gov1").get("/captures/1").status_code in (403, 404)
