"""A capture page: content, escaping, scope, actions, screenshots, four-eyes, precision."""

from __future__ import annotations

import json

from collector.store.screenshots import ensure_key, write_screenshot

from .conftest import post
from .support import audit_rows, connect, seed_capture

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
XSS = '<script>alert(1)</script> "><img src=x onerror=alert(2)>'


def _item(world, **kw) -> int:
    with connect(world.db) as conn:
        return seed_capture(conn, site_id="north", device_id=world.devices["it1"], **kw)


def test_capture_page_shows_everything_escaped(client_for, world):
    qid = _item(world, window_title=XSS, match="kill myself", context="i will kill myself",
                process="firefox", count=3, rule_id="suicide.intent")
    r = client_for("dsl1").get(f"/captures/{qid}")
    assert r.status_code == 200
    html = r.text
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    for text in ("kill myself", "i will kill myself", "firefox", "Alex Smith", "Year 9",
                 "IT1", "NH-LAP-001", "suicide.intent", "16/11/2026 10:00:00"):
        assert text in html, text
    view = audit_rows(world.db, "capture.view")[0]
    assert view["actor"] == "dsl1" and view["site_id"] == "north"
    assert "kill" not in view["detail"]  # never content in the audit log


def test_dsl_of_another_school_gets_404_and_is_audited(client_for, world):
    qid = _item(world)
    c = client_for("dslsouth")
    assert c.get(f"/captures/{qid}").status_code == 404
    assert c.get("/captures/99999").status_code == 404
    assert post(c, f"/captures/{qid}/act", {"op": "note", "note": "x"}, "/queue").status_code \
        == 404
    refused = audit_rows(world.db, "access.refused")
    assert [r["actor"] for r in refused] == ["dslsouth"] * 3
    assert refused[0]["site_id"] == "north"


def test_technician_and_governor_never_see_content(client_for, world):
    qid = _item(world, match="very private words")
    for who in ("tech1", "gov1", "trust1"):
        r = client_for(who).get(f"/captures/{qid}")
        assert r.status_code == 403 and "very private words" not in r.text
    assert len(audit_rows(world.db, "access.refused")) == 3


def test_actions_status_assignee_and_notes(client_for, world):
    qid = _item(world)
    c = client_for("dsl1")
    page = f"/captures/{qid}"
    assert post(c, f"/captures/{qid}/act", {"op": "action", "value": "refer_head_of_year",
                                             "note": "spoke to HoY"}, page).status_code == 303
    assert post(c, f"/captures/{qid}/act", {"op": "assign", "value": "deputy1"},
                page).status_code == 303
    assert post(c, f"/captures/{qid}/act", {"op": "note", "note": "<b>bold</b> note"},
                page).status_code == 303
    assert post(c, f"/captures/{qid}/act", {"op": "status", "value": "closed"},
                page).status_code == 303
    html = c.get(page).text
    assert "Referred to head of year / pastoral" in html and "spoke to HoY" in html
    # staff are shown by name (display names from the accounts), not username
    assert "Assigned to Dep Uty" in html and "&lt;b&gt;bold&lt;/b&gt; note" in html
    assert 'id="status">Closed<' in html
    with connect(world.db) as conn:
        row = conn.execute("SELECT status, assignee, closed_at FROM queue_items WHERE id = ?",
                           (qid,)).fetchone()
    assert row["status"] == "closed" and row["assignee"] == "deputy1" and row["closed_at"]
    actions = [r["action"] for r in audit_rows(world.db)
               if r["action"].startswith("capture.") and r["action"] != "capture.view"]
    assert actions == ["capture.action", "capture.assign", "capture.note", "capture.status"]
    assert c.get("/queue").text.count('data-id="') == 0  # closed items leave the open queue


def test_bad_action_values_are_explained(client_for, world):
    qid = _item(world)
    c = client_for("dsl1")
    r = post(c, f"/captures/{qid}/act", {"op": "action", "value": "delete_everything"}, "/queue")
    assert r.status_code == 400 and "not in the response matrix" in r.text
    r = post(c, f"/captures/{qid}/act", {"op": "assign", "value": "tech1"}, "/queue")
    assert r.status_code == 400 and "not a DSL" in r.text
    r = post(c, f"/captures/{qid}/act", {"op": "status", "value": "gone"}, "/queue")
    assert r.status_code == 400


def test_false_positive_feeds_rule_precision_for_technicians(client_for, world):
    ids = [_item(world, rule_id="bullying.banter", category="bullying") for _ in range(4)]
    c = client_for("dsl1")
    post(c, f"/captures/{ids[0]}/act", {"op": "status", "value": "false_positive"}, "/queue")
    post(c, f"/captures/{ids[1]}/act", {"op": "status", "value": "actioned"}, "/queue")
    html = client_for("tech1").get("/rules/stats").text
    row = html[html.index("bullying.banter"):]
    row = row[:row.index("</tr>")]
    assert "<td>4</td><td>2</td><td>1</td>" in row and "50%" in row
    assert "hurt myself" not in html  # counts only, no content
    assert client_for("dsl1").get("/rules/stats").status_code == 403


def test_screenshot_only_for_dsl_roles_and_audited(client_for, world):
    key = ensure_key(world.data_dir)
    with connect(world.db) as conn:
        qid = seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                           screenshot_path="placeholder")
        cid = conn.execute("SELECT id FROM captures WHERE queue_item_id = ?", (qid,)).fetchone()[0]
        path = write_screenshot(world.data_dir, cid, PNG, key)
        conn.execute("UPDATE captures SET screenshot_path = ? WHERE id = ?", (path, cid))
    url = f"/captures/{qid}/shots/{cid}"
    dsl = client_for("dsl1")
    assert f'data-src="{url}"' in dsl.get(f"/captures/{qid}").text
    r = dsl.get(url)
    assert r.status_code == 200 and r.content == PNG and r.headers["content-type"] == "image/png"
    assert r.headers["cache-control"] == "no-store"
    assert client_for("tech1").get(url).status_code == 403
    assert client_for("dslsouth").get(url).status_code == 404
    views = audit_rows(world.db, "screenshot.view")
    assert [v["actor"] for v in views] == ["dsl1"] and json.loads(views[0]["detail"]) == \
        {"queue_item": qid}


def test_illegal_imagery_four_eyes(client_for, world):
    qid = _item(world, category="csam", severity=5, match="FORBIDDEN-MATCH",
                window_title="FORBIDDEN-TITLE", screenshot_path="screenshots/x.bin")
    a, b = client_for("dsl1"), client_for("deputy1")
    page = f"/captures/{qid}"
    html = a.get(page).text
    assert "Isolate the device" in html and "Refer to the police" in html
    for secret in ("FORBIDDEN", "Alex Smith", "NH-LAP-001", "IT1"):
        assert secret not in html
    # no actions (but the police referral, which needs no content: issue 14), no
    # screenshot before the unlock
    assert post(a, f"{page}/act", {"op": "action", "value": "refer_head_of_year"},
                page).status_code == 403
    with connect(world.db) as conn:
        cid = conn.execute("SELECT id FROM captures WHERE queue_item_id = ?", (qid,)).fetchone()[0]
    assert a.get(f"{page}/shots/{cid}").status_code == 403
    # DSL A asks; A cannot approve their own request; B (a different senior user) approves
    assert post(a, f"{page}/unlock", {"reason": "police referral"}, page).status_code == 303
    assert "waiting for a different DSL" in a.get(page).text
    assert "/approvals/" not in a.get("/approvals").text
    with connect(world.db) as conn:
        uid = conn.execute("SELECT id FROM console_unlocks").fetchone()[0]
    assert post(a, f"/approvals/{uid}/approve", {}, "/approvals").status_code == 403
    assert "police referral" in b.get("/approvals").text
    assert post(b, f"/approvals/{uid}/approve", {}, "/approvals").status_code == 303
    assert post(client_for("tech1"), f"/approvals/{uid}/approve", {}, "/devices").status_code \
        == 403
    html = a.get(page).text
    assert "Alex Smith" in html and "NH-LAP-001" in html and "Isolate the device" in html
    assert "FORBIDDEN" not in html  # metadata only, never content
    assert a.get(f"{page}/shots/{cid}").status_code == 403
    assert post(a, f"{page}/act", {"op": "action", "value": "refer_police"}, page).status_code \
        == 303
    # B did not get access by approving
    assert "Alex Smith" not in b.get(page).text
    # the unlock lapses after an hour
    world.clock.now += 3601
    assert "Alex Smith" not in a.get(page).text
    actions = {r["action"]: r["actor"] for r in audit_rows(world.db)}
    assert actions["unlock.request"] == "dsl1" and actions["unlock.approve"] == "deputy1"
    assert actions["capture.view_guidance"]
