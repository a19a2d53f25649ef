"""One action form (action + status + reason + note in one submit; a reason to close a
severity 4-5 item) and bulk work from the queue (issue 14)."""

from __future__ import annotations

import re

from .conftest import csrf_of, post
from .support import audit_rows, connect, seed_capture


def _item(world, **kw) -> int:
    with connect(world.db) as conn:
        return seed_capture(conn, site_id="north", device_id=world.devices["it1"], **kw)


def _item_row(world, qid: int) -> dict:
    row = world.store.db.one("SELECT status, closed_at FROM queue_items WHERE id = ?", (qid,))
    assert row is not None
    return row


def test_one_submit_records_action_status_reason_and_note(client_for, world):
    qid = _item(world, severity=3)
    c = client_for("dsl1")
    page = f"/captures/{qid}"
    r = post(c, f"{page}/act", {"action": "refer_head_of_year", "status": "actioned",
                                "reason": "Pastoral follow-up agreed", "note": "Told Mr Brown"},
             page)
    assert r.status_code == 303 and r.headers["location"] == f"{page}?done=saved"
    html = c.get(page).text
    history = html[html.index('id="history"'):]
    assert "Referred to head of year / pastoral" in history and "Told Mr Brown" in history
    assert "Status: Actioned" in history and "Pastoral follow-up agreed" in history
    assert "Dee Ess-Ell" in history and "· dsl1 ·" not in history  # people's names
    assert _item_row(world, qid)["status"] == "actioned"
    acts = [a["action"] for a in audit_rows(world.db) if a["action"].startswith("capture.")
            and a["action"] != "capture.view"]
    assert acts == ["capture.action", "capture.status"]


def test_closing_a_severity_4_item_needs_a_reason(client_for, world):
    qid = _item(world, severity=4)
    c = client_for("dsl1")
    page = f"/captures/{qid}"
    assert "needs a reason" in c.get(page).text
    for status in ("closed", "false_positive"):
        r = post(c, f"{page}/act", {"status": status, "note": "no reason given"}, page)
        assert r.status_code == 400 and "needs a recorded reason" in r.text
        assert _item_row(world, qid)["status"] == "new"
    # the older one-field form is held to the same rule
    r = post(c, f"{page}/act", {"op": "status", "value": "closed"}, page)
    assert r.status_code == 400
    r = post(c, f"{page}/act", {"status": "false_positive", "reason": "Song lyrics"}, page)
    assert r.status_code == 303
    row = _item_row(world, qid)
    assert row["status"] == "false_positive" and row["closed_at"]
    stored = world.store.db.one("SELECT action, reason FROM queue_actions "
                                "WHERE queue_item_id = ?", (qid,))
    assert stored == {"action": "status:false_positive", "reason": "Song lyrics"}
    assert "Reason: <span class=\"reason\">Song lyrics</span>" in c.get(page).text


def test_a_severity_3_item_closes_without_a_reason_and_an_empty_submit_is_explained(
        client_for, world):
    qid = _item(world, severity=3)
    c = client_for("dsl1")
    page = f"/captures/{qid}"
    r = post(c, f"{page}/act", {}, page)
    assert r.status_code == 400 and "nothing to record" in r.text
    assert post(c, f"{page}/act", {"status": "closed"}, page).status_code == 303
    assert _item_row(world, qid)["status"] == "closed"


def _bulk(c, ids: list[int], **form: str):
    token = csrf_of(c.get("/queue").text)
    data: dict[str, str | list[str]] = {"csrf": token, **form,
                                        "item": [str(i) for i in ids]}  # repeated fields
    return c.post("/queue/bulk", data=data, follow_redirects=False)


def test_bulk_false_positive_with_one_reason(client_for, world):
    ok = [_item(world, severity=s, match=f"m{s}") for s in (2, 3, 4)]
    csam = _item(world, category="csam", severity=5)
    south = None
    with connect(world.db) as conn:
        south = seed_capture(conn, site_id="south", device_id=world.devices["south"])
    c = client_for("dsl1")
    r = _bulk(c, [*ok, csam, south], status="false_positive",
              reason="Lesson on online safety", note="Year 9 PSHE")
    assert r.status_code == 200
    assert "Marked 3 item(s) as False positive" in r.text
    refused = r.text[r.text.index('id="bulk-refused"'):]
    assert f'data-id="{csam}"' in refused and "never closed in bulk" in refused
    assert f'data-id="{south}"' in refused and "not found, or not an item you may act on" \
        in refused
    for qid in ok:
        assert _item_row(world, qid)["status"] == "false_positive"
    assert _item_row(world, csam)["status"] == "new"
    rows = world.store.db.rows("SELECT queue_item_id, action, reason, note FROM queue_actions "
                               "ORDER BY queue_item_id")
    assert [(r["queue_item_id"], r["action"], r["reason"], r["note"]) for r in rows] == [
        (qid, "status:false_positive", "Lesson on online safety", "Year 9 PSHE") for qid in ok]
    status_audits = audit_rows(world.db, "capture.status")
    assert sorted(int(a["target"].split(":")[1]) for a in status_audits) == ok
    refusals = audit_rows(world.db, "capture.bulk_refused")
    assert sorted(a["target"] for a in refusals) == sorted(
        [f"queue_item:{csam}", f"queue_item:{south}"])
    # the south item's existence is not confirmed to a north DSL
    with connect(world.db) as conn:
        assert conn.execute("SELECT status FROM queue_items WHERE id = ?",
                            (south,)).fetchone()[0] == "new"


def test_bulk_needs_a_reason_and_a_selection_and_is_for_dsls_only(client_for, world):
    qid = _item(world)
    c = client_for("dsl1")
    r = _bulk(c, [qid], status="closed", reason="  ")
    assert r.status_code == 400 and "needs one reason" in r.text
    r = _bulk(c, [], status="closed", reason="x")
    assert r.status_code == 400 and "select at least one" in r.text
    r = _bulk(c, [qid], status="actioned", reason="x")
    assert r.status_code == 400
    r = _bulk(c, [qid], status="closed", reason="x")
    assert r.status_code == 200 and _item_row(world, qid)["status"] == "closed"
    again = _bulk(c, [qid], status="closed", reason="x")
    assert "already closed" in again.text  # refused with a reason, not skipped silently
    tech = client_for("tech1")
    token = csrf_of(tech.get("/devices").text)
    r = tech.post("/queue/bulk", data={"csrf": token, "status": "closed", "reason": "x",
                                       "item": str(qid)}, follow_redirects=False)
    assert r.status_code == 403


def test_the_queue_has_a_checkbox_per_row_for_the_bulk_form(client_for, world):
    qid = _item(world)
    html = client_for("dsl1").get("/queue").text
    assert re.search(rf'<input type="checkbox" name="item" value="{qid}" form="bulk"', html)
    assert 'action="/queue/bulk"' in html
