"""The audit viewer (issue 14): who viewed, exported or changed what, for the DSL and the
data-protection officer; filterable, scoped to their sites, paged by key; a CSV export with
bidi controls shown as marks and formulas neutralised; viewing and exporting it are audited."""

from __future__ import annotations

import csv
import io

from .support import audit_rows, user

RLO = "\u202e"


def _seed(world) -> None:  # type: ignore[no-untyped-def]
    store = world.store
    for i in range(60):
        store.audit("deputy1", "capture.view", f"queue_item:{i}", "north", {"n": i},
                    1_700_000_000_000 + i)
    store.audit("dslsouth", "capture.view", "queue_item:999", "south", {}, 1_700_000_100_000)
    store.audit("deputy1", "export.cpoms", "", "north", {"rows": 3}, 1_700_000_200_000)
    store.audit("deputy1", "login.ok", "", None, {}, 1_700_000_300_000)
    store.audit("dslsouth", "login.ok", "", None, {}, 1_700_000_300_001)
    # a hostile name typed into the log-in form, recorded against a site
    store.audit(f"=HYPERLINK(\"x\"){RLO}evil", "login.failed", f"{RLO}gpj.exe", "north",
                {}, 1_700_000_300_002)


def test_the_dsl_sees_their_sites_audit_filtered_and_paged_by_key(world, client_for):
    _seed(world)
    dsl = client_for("dsl1")
    page = dsl.get("/audit").text
    assert "queue_item:999" not in page and "dslsouth" not in page  # another school's
    assert 'data-id=' in page and "login.ok" in page  # deputy1's log-in (no site) is theirs
    assert 'id="audit-older"' in page
    nxt = page.split('href="/audit?')[1].split('"')[0].replace("&amp;", "&")
    assert nxt.startswith("before=")
    page2 = dsl.get(f"/audit?{nxt}").text
    ids1 = [int(x.split('"')[0]) for x in page.split('data-id="')[1:]]
    ids2 = [int(x.split('"')[0]) for x in page2.split('data-id="')[1:]]
    assert ids1 == sorted(ids1, reverse=True) and max(ids2) < min(ids1) and ids2
    # filters: a person, an action prefix, a target, a date range
    only = dsl.get("/audit?actor=deputy1&action=export.").text
    assert only.count("data-id=") == 1 and "export.cpoms" in only
    assert dsl.get("/audit?target=queue_item:5").text.count("data-id=") == 1
    assert dsl.get("/audit?target=queue_item:").text.count("data-id=") == 50
    assert dsl.get("/audit?from=2023-11-14&to=2023-11-14").text.count("data-id=") > 0
    assert dsl.get("/audit?from=2099-01-01").text.count("data-id=") == 0
    # bad input: 400 naming the field; another school's site: 404
    bad = dsl.get("/audit?from=yesterday")
    assert bad.status_code == 400 and "from" in bad.text
    assert dsl.get("/audit?before=abc").status_code == 400
    assert dsl.get("/audit?site=south").status_code == 404
    views = audit_rows(world.store, "audit.view")
    assert views and views[0]["actor"] == "dsl1"


def test_a_dpo_reads_the_audit_and_reports_but_never_content(world, client_for):
    user(world.store, "dpo1", "dpo", ["north"], "Data Protection")
    _seed(world)
    dpo = client_for("dpo1")
    assert dpo.get("/", follow_redirects=False).headers["location"] == "/audit"
    assert dpo.get("/audit").status_code == 200
    assert dpo.get("/reports/annual").status_code == 200
    for path in ("/queue", "/exports", "/captures/1", "/approvals"):
        assert dpo.get(path).status_code in (403, 404), path
    assert client_for("deputy1").get("/audit").status_code == 403
    assert client_for("tech1").get("/audit").status_code == 403


def test_the_audit_csv_is_safe_to_open_and_its_export_is_audited(world, client_for):
    user(world.store, "dpo1", "dpo", ["north", "south"], "Trust DPO")
    _seed(world)
    dpo = client_for("dpo1")
    r = dpo.get("/audit.csv?action=login.")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    text = r.content.decode("utf-8-sig")
    assert RLO not in text and "\u27e8RLO\u27e9" in text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["Time", "Actor", "Action", "Target", "Site", "Detail", "Audit id"]
    evil = next(row for row in rows[1:] if "HYPERLINK" in row[1])
    assert evil[1].startswith("'=")  # a formula shown as text, never run
    assert {row[2] for row in rows[1:]} <= {"login.ok", "login.failed"}
    # the HTML page shows the marks too
    assert RLO not in dpo.get("/audit").text
    exports = audit_rows(world.store, "audit.export")
    assert [(e["actor"], '"action": "login."' in e["detail"]) for e in exports] == [
        ("dpo1", True)]
