"""The queue paginated by key, sortable, "assigned to me", searchable, with its order
explained on every row (issue 14)."""

from __future__ import annotations

import re

from .conftest import post
from .support import T0, connect, seed_capture

HOUR = 3600 * 1000


def _ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr class="[^"]*" data-id="(\d+)"', html)]


def _link(html: str, which: str) -> str | None:
    m = re.search(rf'id="page-{which}" href="([^"]+)"', html)
    return m.group(1).replace("&amp;", "&") if m else None


def _seed(world, n: int) -> list[int]:
    with connect(world.db) as conn:
        return [seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                             severity=1 + i % 5, priority=(i * 7) % 23 + 20,
                             time_ms=T0 + (i % 9) * HOUR, match=f"m{i}") for i in range(n)]


def test_next_and_previous_walk_every_item_once_in_order(client_for, world):
    _seed(world, 120)
    c = client_for("dsl1")
    rows = world.store.db.rows("SELECT id FROM queue_items ORDER BY pinned DESC, priority DESC, "
                               "last_time_ms DESC, id DESC")
    expected = [r["id"] for r in rows]
    pages, url = [], "/queue"
    while url:
        html = c.get(url).text
        pages.append(_ids(html))
        url = _link(html, "next")
    assert [len(p) for p in pages] == [50, 50, 20]
    assert [i for p in pages for i in p] == expected
    assert "Page 3 of 3" in html and _link(html, "prev")
    # and back again, by key
    back = c.get(_link(html, "prev") or "").text
    assert _ids(back) == pages[1] and "Page 2 of 3" in back
    first = c.get(_link(back, "prev") or "").text
    assert _ids(first) == pages[0] and _link(first, "prev") is None
    # the polled rows follow the same key
    assert _ids(c.get("/queue/rows?" + (_link(back, "next") or "?").split("?", 1)[1]).text) \
        == pages[2]


def test_old_page_links_and_bad_keys_show_the_first_page(client_for, world):
    _seed(world, 60)
    c = client_for("dsl1")
    first = _ids(c.get("/queue").text)
    assert _ids(c.get("/queue?page=2").text) == first
    assert _ids(c.get("/queue?after=bm90LWEta2V5&page=2").text) == first
    assert _ids(c.get("/queue?after=%%%").text) == first


def test_sortable_columns(client_for, world):
    _seed(world, 30)
    c = client_for("dsl1")
    db = world.store.db
    for sort, order in (("severity", "severity DESC, last_time_ms DESC, id DESC"),
                        ("last_seen", "last_time_ms DESC, id DESC"),
                        ("category", "category ASC, id ASC")):
        expected = [r["id"] for r in db.rows(f"SELECT id FROM queue_items ORDER BY {order}")]
        assert _ids(c.get(f"/queue?sort={sort}").text) == expected, sort
    asc = [r["id"] for r in db.rows("SELECT id FROM queue_items ORDER BY severity, "
                                    "last_time_ms, id")]
    html = c.get("/queue?sort=severity&dir=asc").text
    assert _ids(html) == asc
    assert 'sort=severity&amp;dir=desc"' in html  # click again: the other way
    # status and pupil sort too (by lifecycle order and by the pupil's name)
    assert len(_ids(c.get("/queue?sort=status&status=all").text)) == 30
    assert len(_ids(c.get("/queue?sort=pupil").text)) == 30


def test_sorted_pages_by_key_cover_everything(client_for, world):
    _seed(world, 70)
    c = client_for("dsl1")
    seen, url = [], "/queue?sort=pupil"
    while url:
        html = c.get(url).text
        seen += _ids(html)
        url = _link(html, "next")
    assert sorted(seen) == sorted(r["id"] for r in world.store.db.rows(
        "SELECT id FROM queue_items")) and len(seen) == len(set(seen))


def test_assigned_to_me(client_for, world):
    mine, theirs, nobody = _seed(world, 3)
    c = client_for("dsl1")
    post(c, f"/captures/{mine}/act", {"op": "assign", "value": "dsl1"}, "/queue")
    post(c, f"/captures/{theirs}/act", {"op": "assign", "value": "deputy1"}, "/queue")
    assert _ids(c.get("/queue?mine=1").text) == [mine]
    assert set(_ids(c.get("/queue").text)) == {mine, theirs, nobody}
    assert 'id="view-mine"' in c.get("/queue").text


def test_search_over_match_context_and_title_never_restricted(client_for, world):
    with connect(world.db) as conn:
        by_match = seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                                match="Needle-one", context="x", window_title="y")
        by_context = seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                                  match="a", context="some NEEDLE here", window_title="y")
        by_title = seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                                match="a", context="b", window_title="needle - Chrome")
        seed_capture(conn, site_id="north", device_id=world.devices["it1"], match="hay")
        seed_capture(conn, site_id="north", device_id=world.devices["it1"], category="csam",
                     severity=5, match="needle", window_title="needle")
        seed_capture(conn, site_id="south", device_id=world.devices["south"], match="needle")
    c = client_for("dsl1")
    assert sorted(_ids(c.get("/queue?q=needle").text)) == sorted(
        [by_match, by_context, by_title])
    assert _ids(c.get("/queue?q=50%25_").text) == []  # wildcards are literal


def test_every_row_explains_its_place(client_for, world):
    with connect(world.db) as conn:
        dev = world.devices["it1"]
        seed_capture(conn, site_id="north", device_id=dev, severity=2, category="bullying",
                     rule_id="b.x", time_ms=T0 - HOUR)
        # severity 3 (60) + 1 earlier capture (2) + 1 other category (5) + exact match (5)
        later = seed_capture(conn, site_id="north", device_id=dev, severity=3, priority=72,
                             time_ms=T0)
        top = seed_capture(conn, site_id="north", device_id=dev, severity=5, time_ms=T0,
                           os_user="pupil9")
    html = client_for("dsl1").get("/queue").text
    assert _ids(html)[0] == top
    row = html[html.index(f'data-id="{later}"'):]
    row = row[:row.index("</tr>")]
    assert "priority 72" in row
    for part in ('data-part="severity">60 severity 3 \u00d7 20', 'data-part="repetition">2 ',
                 'data-part="escalation">5 ', 'data-part="exact">5 '):
        assert part in row, part
    top_row = html[html.index(f'data-id="{top}"'):]
    assert "Pinned: severity 5" in top_row[:top_row.index("</tr>")]
    assert 'id="queue-order"' in html and "Why this order?" in html
