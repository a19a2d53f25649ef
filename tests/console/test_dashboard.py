"""The DSL's and the trust lead's dashboard: real SVG charts with the numbers beside them,
exact for a DSL at their own school, the governors' small-number rule for everyone else,
restricted (illegal-imagery) items counted by category only, and every view audited."""

from __future__ import annotations

import re

from collector.services.reports import suppress, suppress_grid

from .support import T0, audit_rows, connect, seed_capture

DAY = 24 * 3600 * 1000


def _bars(html: str, chart: str) -> dict[tuple[str, str], int]:
    """(data-key, data-col) -> data-value of every bar in one chart's SVG."""
    svg = html[html.index(f'id="{chart}"'):]
    svg = svg[:svg.index("</svg>")]
    return {(k, c): int(float(v)) for k, c, v in re.findall(
        r'<rect class="bar" data-key="([^"]*)" data-col="(\d+)" data-value="([^"]+)"', svg)}


def _seed(world, n: int, site_id: str = "north", dev: str = "it1",  # type: ignore[no-untyped-def]
          **kw) -> list[int]:
    with connect(world.db) as conn:
        return [seed_capture(conn, site_id=site_id, device_id=world.devices[dev], **kw)
                for _ in range(n)]


def test_dsl_sees_exact_charts_of_their_school(client_for, world):
    _seed(world, 5, category="bullying", rule_id="bullying.names", severity=2)
    _seed(world, 1, category="self_harm", severity=4, time_ms=T0 - 7 * DAY)
    _seed(world, 2, category="suicide", rule_id="suicide.intent", severity=5)
    _seed(world, 1, category="csam", rule_id="csam.terms", severity=5)
    _seed(world, 4, site_id="south", dev="south", category="bullying")  # not theirs
    html = client_for("dsl1").get("/dashboard").text
    cats = _bars(html, "chart-category")
    this_week, last_week = "11", "10"
    assert cats[("bullying", this_week)] == 5 and cats[("suicide", this_week)] == 2
    assert cats[("self_harm", last_week)] == 1
    assert cats[("csam", this_week)] == 1  # restricted: counted by category ...
    sevs = _bars(html, "chart-severity")
    assert sevs[("5", this_week)] == 2  # ... but never by severity
    assert sevs[("2", this_week)] == 5 and sevs[("4", last_week)] == 1
    assert _bars(html, "chart-sev5") == {("North High School", "0"): 2}
    assert "South Academy" not in html
    # the text alternative says the same
    table = html[html.index('id="table-category"'):]
    row = table[table.index('data-key="bullying"'):]
    assert "<td>5</td></tr>" in row[:row.index("</tr>") + 5]
    assert 'role="img"' in html and "<desc" in html
    assert "hurt myself" not in html and "Alex Smith" not in html
    (row_,) = audit_rows(world.db, "dashboard.view")
    assert row_["actor"] == "dsl1" and row_["site_id"] == "north"


def test_time_to_first_action_and_false_positive_rate(client_for, world):
    from .conftest import post
    ids = _seed(world, 4, category="bullying", rule_id="bullying.banter", severity=2,
                time_ms=int(world.clock.now * 1000) - 5 * 3600 * 1000)
    c = client_for("dsl1")
    # two actioned 5 hours after arrival (the clock is "now"), one false positive
    for qid in ids[:2]:
        post(c, f"/captures/{qid}/act", {"op": "status", "value": "actioned"}, "/queue")
    post(c, f"/captures/{ids[2]}/act", {"op": "status", "value": "false_positive"}, "/queue")
    html = c.get("/dashboard").text
    assert _bars(html, "chart-first-action") == {("16 Nov", "11"): 5}
    fp = html[html.index('id="chart-fp"'):]
    assert 'data-key="bullying.banter"' in fp and 'data-value="0.3333"' in fp
    table = html[html.index('id="table-first-action"'):]
    assert "<th>16 Nov</th><td>5.0</td><td>3</td><td>1</td>" in table


def test_trust_lead_gets_the_governors_small_number_rule(client_for, world):
    _seed(world, 6, category="bullying", rule_id="bullying.names", severity=2)
    _seed(world, 1, category="self_harm", severity=4)
    _seed(world, 5, site_id="south", dev="south", category="bullying", severity=2)
    _seed(world, 3, site_id="south", dev="south", category="suicide", severity=5,
          rule_id="suicide.intent")
    html = client_for("trust1").get("/dashboard").text
    cats = _bars(html, "chart-category")
    # self_harm 1 is withheld, and so is the smallest other cell of the same week (or the
    # week's total, 14, less 11 would tell it)
    assert cats == {("bullying", "11"): 11}
    assert "withheld" in html and "counts from 1 to 2 are withheld" in html
    assert _bars(html, "chart-sev5") == {("South Academy", "1"): 3}
    assert 'class="withheld"' in html
    # one school at a time (drill-down), still counts only
    one = client_for("trust1").get("/dashboard?site=south").text
    assert _bars(one, "chart-sev5") == {("South Academy", "0"): 3}
    assert client_for("trust1").get("/dashboard?site=elsewhere").status_code == 404
    assert client_for("dsl1").get("/dashboard?site=south").status_code == 404


def test_grid_suppression_cannot_be_differenced():
    grid = [[6, 1, 0], [5, 0, 3], [0, 4, 4]]
    cells = suppress_grid(grid)
    for r, row in enumerate(cells):
        hidden = [c for c, v in enumerate(row) if v is None]
        assert len(hidden) != 1, f"row {r}: one withheld cell is the total minus the rest"
    for c in range(3):
        col = [cells[r][c] for r in range(3)]
        assert [v for v in col if v is None].__len__() != 1
    assert cells[0][1] is None
    # one row alone: the governors' report's rule (its columns, single cells, add nothing
    # that suppress() had not withheld already, except lone small cells)
    assert suppress([5, 1, 7, 0]) == [None, None, 7, 0]


def test_trust_lead_sees_schools_side_by_side(client_for, world):
    now = int(world.clock.now * 1000)
    _seed(world, 4, category="suicide", rule_id="suicide.intent", severity=5,
          time_ms=now - 60_000)
    _seed(world, 3, site_id="south", dev="south", category="bullying", severity=3,
          time_ms=now - 60_000)
    with connect(world.db) as conn:
        conn.execute("UPDATE devices SET last_seen_at = ? WHERE id = ?",
                     (now - 5 * DAY, world.devices["bare"]))
        conn.execute("UPDATE devices SET last_seen_at = NULL WHERE id = ?",
                     (world.devices["south"],))
    c = client_for("trust1")
    home = c.get("/", follow_redirects=False)
    assert home.headers["location"] == "/trust"
    html = c.get("/trust").text
    north = html[html.index('data-site="north"'):]
    north = north[:north.index("</tr>")]
    south = html[html.index('data-site="south"'):]
    south = south[:south.index("</tr>")]
    assert 'class="sev5">4</td>' in north and 'class="sev3">3</td>' in south
    assert '<td class="silent warn">1</td>' in north and '<td class="never">0</td>' in north
    assert '<td class="never warn">1</td>' in south
    assert "set" in north and "none: urgent email is off" in south
    # counts only: a trust lead holds no DSL role, so no queue link
    assert "/queue?site=" not in html and "counts only" in north
    assert "/dashboard?site=north" in north
    assert _bars(html, "chart-open")[("5", "0")] == 4
    assert audit_rows(world.db, "trust.view")[0]["actor"] == "trust1"
    weekly = c.get("/trust/weekly").text
    row = weekly[weekly.index('data-site="north"'):]
    assert '<td class="new">4</td>' in row[:row.index("</tr>")]
    assert audit_rows(world.db, "report.trust_weekly")[0]["actor"] == "trust1"


def test_who_may_open_the_dashboard_and_trust_pages(client_for, world):
    for who, dash, trust in (("dsl1", 200, 403), ("deputy1", 200, 403), ("trust1", 200, 200),
                             ("tech1", 403, 403), ("gov1", 403, 403)):
        c = client_for(who)
        assert c.get("/dashboard").status_code == dash, who
        assert c.get("/trust").status_code == trust, who
        assert c.get("/trust/weekly").status_code == trust, who
