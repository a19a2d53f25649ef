"""A pupil's page (everything about one pupil across devices and time), the capture page's
timeline around an item, USB/media captures in full, and people's names (issue 14)."""

from __future__ import annotations

import json

from .conftest import post
from .support import T0, audit_rows, connect, seed_capture

HOUR = 3600 * 1000
PUPIL = "/pupils/north/pupil1"


def _item(world, device: str = "it1", **kw) -> int:
    with connect(world.db) as conn:
        return seed_capture(conn, site_id="north", device_id=world.devices[device], **kw)


def test_pupil_page_has_items_captures_actions_and_devices(client_for, world):
    a = _item(world, match="first-match", time_ms=T0)
    b = _item(world, device="bare", category="bullying", rule_id="bullying.x",
              match="second-match", window_title="Chat - Teams", time_ms=T0 + HOUR)
    other = _item(world, os_user="pupil2", match="not-this-pupil", time_ms=T0 + 2 * HOUR)
    c = client_for("dsl1")
    post(c, f"/captures/{a}/act", {"action": "refer_tutor", "reason": "Tutor knows",
                                   "note": "spoke at break"}, f"/captures/{a}")
    html = c.get(PUPIL).text
    assert '<h1 id="pupil-name">Alex Smith</h1>' in html and "Year 9" in html
    assert html.index(f'data-id="{b}"') < html.index(f'data-id="{a}"')  # newest first
    assert "first-match" in html and "second-match" in html and "Chat - Teams" in html
    assert "not-this-pupil" not in html and f'data-id="{other}"' not in html
    assert "Referred to class teacher / tutor" in html and "spoke at break" in html
    assert "Tutor knows" in html and "Dee Ess-Ell" in html
    assert "NH-LAP-001" in html and "NH-LAP-002" in html  # across devices
    views = audit_rows(world.db, "pupil.view")
    assert [(v["actor"], v["target"], v["site_id"]) for v in views] == [
        ("dsl1", "pupil:north/pupil1", "north")]


def test_the_pupils_name_links_to_their_page_from_queue_and_capture(client_for, world):
    qid = _item(world)
    c = client_for("dsl1")
    link = f'href="{PUPIL}">Alex Smith</a>'
    assert link in c.get("/queue").text
    assert link in c.get("/queue/rows").text
    assert link in c.get(f"/captures/{qid}").text


def test_pupil_page_scope_and_permission(client_for, world):
    _item(world)
    assert client_for("dslsouth").get(PUPIL).status_code == 404
    assert client_for("dsl1").get("/pupils/north/nobody-here").status_code == 404
    assert client_for("dsl1").get("/pupils/elsewhere/pupil1").status_code == 404
    for who in ("tech1", "gov1", "trust1"):
        assert client_for(who).get(PUPIL).status_code == 403, who
    refused = audit_rows(world.db, "access.refused")
    assert len(refused) >= 5


def test_illegal_imagery_shows_its_category_only(client_for, world):
    _item(world, match="ordinary-match", time_ms=T0)
    csam = _item(world, category="csam", severity=5, match="FORBIDDEN-MATCH",
                 window_title="FORBIDDEN-TITLE", time_ms=T0 + HOUR)
    c = client_for("dsl1")
    html = c.get(PUPIL).text
    assert "FORBIDDEN" not in html and f'data-id="{csam}"' in html
    assert "Restricted: illegal-imagery category" in html
    # and on the timeline of the pupil's other item
    ordinary = world.store.db.scalar("SELECT MIN(id) FROM queue_items")
    page = c.get(f"/captures/{ordinary}").text
    timeline = page[page.index('id="timeline"'):page.index("Record what you did")]
    assert "FORBIDDEN" not in timeline and "Restricted: illegal-imagery category" in timeline


def test_capture_page_timeline_shows_the_pupils_captures_before_and_after(client_for, world):
    before = _item(world, match="before-match", time_ms=T0 - 2 * HOUR)
    this = _item(world, match="this-match", category="bullying", rule_id="bullying.x",
                 time_ms=T0)
    after = _item(world, match="after-match", time_ms=T0 + 2 * HOUR)
    _item(world, os_user="pupil2", match="someone-else", time_ms=T0 + HOUR)
    html = client_for("dsl1").get(f"/captures/{this}").text
    timeline = html[html.index('id="timeline"'):html.index("Record what you did")]
    assert timeline.index("before-match") < timeline.index('id="timeline-this"') \
        < timeline.index("after-match")
    assert f'href="/captures/{before}"' in timeline and f'href="/captures/{after}"' in timeline
    assert "someone-else" not in timeline


def test_usb_captures_show_label_filesystem_mount_point_and_files(client_for, world):
    qid = _item(world, source="media", category="self_harm", match="goodbye letter.docx",
                window_title="")
    media = {"event": "file_written", "label": "KINGSTON", "fstype": "vfat",
             "size_bytes": 16_000_000_000, "mount_point": "/media/pupil1/KINGSTON",
             "files_written": 7, "file_name": "goodbye letter.docx"}
    world.store.db.execute("UPDATE captures SET media = ? WHERE queue_item_id = ?",
                           (json.dumps(media), qid))
    c = client_for("dsl1")
    html = c.get(f"/captures/{qid}").text
    for text in ('class="media-event">File written<', 'class="media-label">KINGSTON<',
                 'class="media-fstype">vfat<', "16.0 GB",
                 'class="media-mount">/media/pupil1/KINGSTON<', 'class="media-files">7<',
                 'class="media-file">goodbye letter.docx<',
                 'id="file-names">goodbye letter.docx<'):
        assert text in html, text
    assert "KINGSTON" in c.get(PUPIL).text


def test_pupil_page_is_paginated_by_key(client_for, world):
    ids = [_item(world, match=f"m{i}", time_ms=T0 + i * HOUR) for i in range(30)]
    c = client_for("dsl1")
    first = c.get(PUPIL).text
    assert 'id="page-prev"' not in first
    seen = [i for i in ids if f'data-id="{i}"' in first]
    assert len(seen) == 25 and ids[-1] in seen
    nxt = first.split('id="page-next" href="')[1].split('"')[0]
    second = c.get(PUPIL + nxt).text
    rest = [i for i in ids if f'data-id="{i}"' in second]
    assert sorted(rest + seen) == sorted(ids) and not set(rest) & set(seen)
    prev = second.split('id="page-prev" href="')[1].split('"')[0]
    back = c.get(PUPIL + prev).text
    assert [i for i in ids if f'data-id="{i}"' in back] == seen
    assert c.get(PUPIL + "?after=garbage!").status_code == 200  # a bad key: the first page


def test_assignee_is_shown_by_name(client_for, world):
    qid = _item(world)
    c = client_for("dsl1")
    post(c, f"/captures/{qid}/act", {"op": "assign", "value": "deputy1"}, f"/captures/{qid}")
    assert "<td>Dep Uty</td>" in c.get("/queue").text
    html = c.get(f"/captures/{qid}").text
    assert 'id="assignee">Dep Uty<' in html and '<option value="deputy1" selected>Dep Uty' \
        in html
