"""Console access control under attack: the real Starlette app over a real store (SQLite and
PostgreSQL: the fixtures of tests/console/conftest.py run every test on both).

Cross-school URL guessing (with no existence oracle), technicians and governors probing for
content, session expiry with an injected clock, CSRF replay across sessions, password
brute force. Every refusal must be audited.
"""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from collector.store.screenshots import ensure_key, write_screenshot
from tests.console.conftest import (  # noqa: F401  (pytest fixtures, imported to reuse)
    World,
    app,
    backend,
    client_for,
    console_pg_url,
    csrf_of,
    login,
    pg_databases,
    world,
)
from tests.console.support import Conn, audit_rows, connect, seed_capture, tiny_png

SECRET = "zebra-lantern-secret"


def _with_shot(conn: Conn, w: World, qid: int) -> str:
    cid = str(conn.execute("SELECT id FROM captures WHERE queue_item_id = ?",
                           (qid,)).fetchone()[0])
    path = write_screenshot(w.data_dir, cid, tiny_png(), ensure_key(w.data_dir))
    conn.execute("UPDATE captures SET screenshot_path = ? WHERE id = ?", (path, cid))
    return cid


def _normalise(html: str, qid: int) -> str:
    """The page with per-request values (its own URL, nonces, CSRF tokens) blanked."""
    html = html.replace(f"/captures/{qid}", "/captures/N")
    return re.sub(r'(nonce|value)="[^"]*"', r'\1=""', html)


def _refused_for(w: World, actor: str) -> list[dict[str, object]]:
    return [a for a in audit_rows(w.db, "access.refused") if a["actor"] == actor]


def test_dsl_of_school_a_cannot_reach_school_b_by_url_guessing(client_for, world):  # noqa: F811
    with connect(world.db) as conn:
        south = [seed_capture(conn, site_id="south", device_id=world.devices["south"],
                              match=SECRET, context=f"{SECRET} context", os_user="spupil")
                 for _ in range(3)]
        south_shot = _with_shot(conn, world, south[0])
        north = seed_capture(conn, site_id="north", device_id=world.devices["it1"])
    c = client_for("dsl1")
    assert c.get(f"/captures/{north}").status_code == 200
    top = max([*south, north]) + 5
    bodies: dict[int, str] = {}
    for qid in range(1, top + 1):
        if qid == north:
            continue
        r = c.get(f"/captures/{qid}")
        assert r.status_code == 404, (qid, r.status_code)
        assert SECRET not in r.text and "spupil" not in r.text
        bodies[qid] = _normalise(r.text, qid)
    # another school's item and an id that does not exist look exactly the same
    assert bodies[south[0]] == bodies[top], "response reveals that the item exists"
    r = c.get(f"/captures/{south[0]}/shots/{south_shot}")
    assert r.status_code == 404 and not r.content.startswith(b"\x89PNG")
    token = csrf_of(c.get("/queue").text)
    for path, data in ((f"/captures/{south[1]}/act", {"op": "status", "value": "closed"}),
                       (f"/captures/{south[1]}/unlock", {"reason": "curious"})):
        r = c.post(path, data={**data, "csrf": token}, follow_redirects=False)
        assert r.status_code == 404, (path, r.status_code)
    with connect(world.db) as conn:
        assert conn.execute("SELECT status FROM queue_items WHERE id = ?",
                            (south[1],)).fetchone()[0] == "new"
    # filters and exports cannot be pointed at the other school either
    for url in ("/queue?site=south", "/queue/rows?site=south", "/queue?q=spupil",
                "/queue?q=' OR 1=1 --", "/queue/rows?q=%25' OR site_id='south' --",
                "/queue?site=north' OR '1'='1", "/queue?category=x') OR 1=1 --",
                "/exports/incident-log.csv?site=south", "/exports/cpoms.csv?site=south",
                "/reports/weekly?site=south"):
        r = c.get(url)
        text = r.text
        if "q=spupil" in url:  # the page shows the DSL's own search back; that is no leak
            text = text.replace("spupil", "")
        assert SECRET not in text and "spupil" not in text, url
        assert not any(f'href="/captures/{q}"' in text for q in south), url
    refused = _refused_for(world, "dsl1")
    assert len(refused) >= top - 1 + 3  # every capture id, the screenshot, both POSTs
    assert {a["target"] for a in refused} >= {f"/captures/{q}" for q in south}


def test_technician_cannot_read_capture_content_or_screenshots(client_for, world):  # noqa: F811
    with connect(world.db) as conn:
        qid = seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                           match=SECRET, context=f"typed {SECRET}", window_title=SECRET)
        shot = _with_shot(conn, world, qid)
    c = client_for("tech1")
    seen = []
    for url in ("/", "/queue", "/queue/rows", f"/captures/{qid}", f"/captures/{qid}/shots/{shot}",
                "/devices", "/rules/stats", "/exports/incident-log.csv",
                "/exports/incident-log.html", "/exports/cpoms.csv", "/reports/weekly",
                "/reports/annual", "/approvals"):
        r = c.get(url)
        seen.append((url, r.status_code))
        assert SECRET.encode() not in r.content, url
        assert not r.content.startswith(b"\x89PNG"), url
    codes = dict(seen)
    assert codes[f"/captures/{qid}"] == 403 and codes[f"/captures/{qid}/shots/{shot}"] == 403
    assert codes["/devices"] == 200 and codes["/rules/stats"] == 200
    refused = [u for u, s in seen if s in (403, 404)]
    assert len(_refused_for(world, "tech1")) == len(refused)


def test_governor_sees_only_anonymised_numbers(client_for, world):  # noqa: F811
    with connect(world.db) as conn:
        for _ in range(3):
            seed_capture(conn, site_id="north", device_id=world.devices["it1"], match=SECRET,
                         os_user="pupil1", hostname="NH-LAP-001")
    c = client_for("gov1")
    r = c.get("/reports/annual")
    assert r.status_code == 200
    for private in (SECRET, "pupil1", "Alex Smith", "NH-LAP-001", world.devices["it1"],
                    "Notes - Mousepad"):
        assert private not in r.text, private
    assert re.search(r"\b3\b", r.text), "the annual report shows the anonymised count"
    for url in ("/queue", "/captures/1", "/exports/incident-log.csv", "/reports/weekly",
                "/devices"):
        assert c.get(url).status_code == 403, url
    assert len(_refused_for(world, "gov1")) == 5


def test_sessions_expire_idle_and_absolute_and_die_at_logout(app, client_for, world):  # noqa: F811
    c = client_for("dsl1")
    # active use every 20 minutes keeps the session alive ... until the 12 h absolute limit
    alive_minutes = 0
    while c.get("/queue", follow_redirects=False).status_code == 200:
        world.clock.now += 20 * 60
        alive_minutes += 20
        assert alive_minutes <= 13 * 60, "session never expires while in use"
    assert 11 * 60 <= alive_minutes <= 12 * 60 + 20
    r = c.get("/queue", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    # idle: 31 minutes without a request ends a fresh session
    idle = client_for("dsl1")
    assert idle.get("/queue", follow_redirects=False).status_code == 200
    world.clock.now += 31 * 60
    assert idle.get("/queue", follow_redirects=False).status_code == 303
    # a stolen cookie stops working after logout (server-side session, not just the cookie)
    c2 = client_for("dsl1")
    cookie = dict(c2.cookies)
    token = csrf_of(c2.get("/queue").text)
    assert c2.post("/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
    with TestClient(app, base_url="https://testserver", cookies=cookie) as thief:
        assert thief.get("/queue", follow_redirects=False).status_code == 303


def test_csrf_token_of_one_session_is_useless_in_another(client_for, world):  # noqa: F811
    with connect(world.db) as conn:
        qid = seed_capture(conn, site_id="north", device_id=world.devices["it1"])
    victim, attacker = client_for("dsl1"), client_for("deputy1")
    stolen = csrf_of(attacker.get("/queue").text)
    for headers in ({}, {"Origin": "https://testserver"}):
        r = victim.post(f"/captures/{qid}/act", data={"op": "status", "value": "closed",
                                                     "csrf": stolen},
                        headers=headers, follow_redirects=False)
        assert r.status_code == 403
    own = csrf_of(victim.get("/queue").text)
    r = victim.post(f"/captures/{qid}/act", data={"op": "status", "value": "closed",
                                                 "csrf": own},
                    headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert r.status_code == 403
    with connect(world.db) as conn:
        assert conn.execute("SELECT status FROM queue_items WHERE id = ?",
                            (qid,)).fetchone()[0] == "new"
    assert len(audit_rows(world.db, "csrf.refused")) == 3


def test_password_brute_force_is_throttled_and_audited(app, world):  # noqa: F811
    with TestClient(app, base_url="https://testserver") as c:
        codes = [login(c, "dsl1", f"guess-{i:04d}-password").status_code for i in range(12)]
        assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
        assert login(c, "dsl1").status_code == 429  # even the right password, for now
        world.clock.now += 16 * 60
        assert login(c, "dsl1").status_code == 303
    assert len(audit_rows(world.db, "login.failed")) == 5
    assert len(audit_rows(world.db, "login.throttled")) == 8
