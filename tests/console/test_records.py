"""Records that must never be wrong or turned against users (issue 14): exports state only
recorded actions, log-in throttling cannot lock a DSL out, bidi controls are shown not obeyed,
the governors' report cannot be differenced, bad URLs get 400/404, and there is a favicon."""

from __future__ import annotations

import csv
import io
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from collector.services.reports import MIN_SHOWN, suppress

from .conftest import login, post
from .support import T0, audit_rows, connect, seed_capture

RLO = "\u202e"


def _csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))


# --- an export states only what was recorded ------------------------------------------------

def test_export_never_states_a_police_referral_that_was_not_recorded(client_for, world):
    with connect(world.db) as conn:
        qid = seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                           category="csam", severity=5, status="new")
    dsl = client_for("dsl1")
    for url in ("/exports/incident-log.csv", "/exports/cpoms.csv",
                "/exports/incident-log.html"):
        text = dsl.get(url).text
        assert "Referred to police" not in text, url
        assert "withheld by design" in text and "no referral recorded yet" in text, url
    rec = dict(zip(*_csv(dsl.get("/exports/cpoms.csv").text)[:2], strict=True))
    assert rec["Actions Taken"] == "No action recorded" and rec["Status"] == "New"

    # once a DSL records the referral (after the four-eyes unlock), the record says so
    post(dsl, f"/captures/{qid}/unlock", {"reason": "refer"}, f"/captures/{qid}")
    deputy = client_for("deputy1")
    uid = re.search(r"/approvals/(\d+)/approve", deputy.get("/approvals").text)
    assert uid, "the unlock request is not on the deputy's approvals page"
    post(deputy, f"/approvals/{uid.group(1)}/approve", {}, "/approvals")
    assert post(dsl, f"/captures/{qid}/act", {"op": "action", "value": "refer_police"},
                f"/captures/{qid}").status_code == 303
    rows = _csv(dsl.get("/exports/incident-log.csv").text)
    rec = dict(zip(rows[0], rows[1], strict=True))
    assert "dsl1: Referred to police" in rec["Actions and Reasons"]
    assert "no referral recorded yet" not in rec["Details of Incident"]


# --- log-in throttling ----------------------------------------------------------------------

def test_a_wrong_password_flood_cannot_lock_the_dsl_out_of_their_own_browser(app, world):
    with TestClient(app, base_url="https://testserver") as dsl:
        assert login(dsl, "dsl1").status_code == 303          # her browser is now known
        assert post(dsl, "/logout", {}, "/queue").status_code == 303
        with TestClient(app, base_url="https://testserver") as attacker:  # same address
            codes = [login(attacker, "dsl1", f"guess {i} wrong!").status_code
                     for i in range(10)]
            assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
        assert login(dsl, "dsl1").status_code == 303          # the right password still works
    assert len(audit_rows(world.db, "login.failed")) == 5


def test_login_delays_grow_and_lapse(app, world):
    with TestClient(app, base_url="https://testserver") as c:
        for _ in range(5):
            assert login(c, "dsl1", "wrong password!").status_code == 401
        r = login(c, "dsl1", "wrong password!")
        assert r.status_code == 429 and "Wait 1 minute" in r.text
        world.clock.now += 61
        assert login(c, "dsl1", "wrong password!").status_code == 401   # the 6th counts
        r = login(c, "dsl1")
        assert r.status_code == 429 and "Wait 2 minutes" in r.text      # and doubles the wait
        world.clock.now += 121
        assert login(c, "dsl1").status_code == 303


def _proxied_app(world, proxies):  # type: ignore[no-untyped-def]
    return world.make_app(trusted_proxies=proxies)


def test_forwarded_address_is_believed_only_from_a_trusted_proxy(world):
    app = _proxied_app(world, ["127.0.0.1"])
    behind = {"client": ("127.0.0.1", 40000), "base_url": "https://testserver"}
    with TestClient(app, headers={"X-Forwarded-For": "203.0.113.9"}, **behind) as attacker:
        codes = [login(attacker, "dsl1", f"guess {i} wrong!").status_code for i in range(6)]
        assert codes == [401] * 5 + [429]
    # a colleague behind the same proxy, on a browser that never logged in: not throttled
    with TestClient(app, headers={"X-Forwarded-For": "198.51.100.7"}, **behind) as colleague:
        assert login(colleague, "dsl1").status_code == 303
    assert {r["detail"] for r in audit_rows(world.db, "login.failed")} == \
        {'{"ip": "203.0.113.9"}'}
    assert '"198.51.100.7"' in audit_rows(world.db, "login.ok")[0]["detail"]

    # from an untrusted peer the header is the client's own words: ignored
    app = _proxied_app(world, [])
    with TestClient(app, client=("192.0.2.50", 40000), base_url="https://testserver") as c:
        for _ in range(5):
            login(c, "deputy1", "wrong password!")
        c.headers["X-Forwarded-For"] = "198.51.100.99"
        assert login(c, "deputy1").status_code == 429


# --- bidi controls are shown, never obeyed --------------------------------------------------

def test_bidi_controls_are_visible_in_every_rendering_and_export(client_for, world):
    hostile = f"ok {RLO}gnp.exe evil"
    with connect(world.db) as conn:
        qid = seed_capture(conn, site_id="north", device_id=world.devices["it1"], match=hostile,
                           window_title=f"Notes {RLO}txt.exe", context=f"i said {hostile}")
    dsl = client_for("dsl1")
    for url in ("/queue", f"/captures/{qid}", "/exports/incident-log.html",
                "/exports/incident-log.csv", "/exports/cpoms.csv"):
        text = dsl.get(url).text
        assert RLO not in text, url
        assert "\u27e8RLO\u27e9" in text, url


# --- the governors' report cannot be differenced --------------------------------------------

@given(st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=15))
def test_no_withheld_count_can_be_worked_out_from_the_total(values):
    cells = suppress(values)
    withheld = [i for i, c in enumerate(cells) if c is None]
    assert all(cells[i] is None for i, v in enumerate(values) if 0 < v < MIN_SHOWN)
    assert all(c == v for c, v in zip(cells, values, strict=True) if c is not None)
    if not withheld or sum(values) < MIN_SHOWN:
        return  # nothing withheld, or the total itself is withheld in the report
    rest = sum(values[i] for i in withheld)  # what total minus the shown cells gives away
    assert len(withheld) >= 2
    # even if every withheld cell were known to be at least 1, more than one split fits
    # (unless zeros are withheld too, or every cell is: then no cell is known to be >= 1)
    assert (rest > len(withheld) or any(values[i] == 0 for i in withheld)
            or len(withheld) == len(values))


def test_annual_report_withholds_consistently(client_for, world):
    with connect(world.db) as conn:
        for _ in range(4):
            seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                         category="bullying", time_ms=T0)
        seed_capture(conn, site_id="north", device_id=world.devices["it1"],
                     category="grooming", time_ms=T0 - 60 * 86400_000)
    html = client_for("gov1").get("/reports/annual?year=2026").text
    assert 'id="annual-total">5<' in html
    cats = html[html.index('id="annual-category"'):html.index("</table>",
                                                                html.index('id="annual-category"'))]
    shown = [int(n) for n in re.findall(r"<td>(\d+)</td>", cats)]
    # grooming 1 alone would be 5 minus the shown 4: bullying is withheld with it
    assert cats.count("withheld") >= 2 and 5 - sum(shown) >= MIN_SHOWN
    months = html[html.index('id="by-month"'):html.index("</table>", html.index('id="by-month"'))]
    assert "<th>Sep</th><td>withheld</td>" in months  # a month with one item is withheld too
    assert "<th>Nov</th><td>withheld</td>" in months  # and its complement


# --- bad input is a clear 400/404, never a 500 ----------------------------------------------

@pytest.mark.parametrize(("url", "status"), [
    ("/captures/99999999999999999999999", 404),
    ("/captures/9223372036854775808", 404),
    ("/captures/0", 404),
    ("/captures/99999999999999999999999/shots/abc", 404),
    ("/reports/annual?year=0", 400),
    ("/reports/annual?year=99999", 400),
    ("/reports/annual?year=-1", 400),
    ("/queue?severity=99999999999999999999&page=99999999999999999999", 200),
    ("/exports/incident-log.csv?from=9999-12-31&to=9999-12-31", 200),
])
def test_bad_numbers_in_urls_are_400_or_404(app, world, url, status):
    with TestClient(app, base_url="https://testserver", raise_server_exceptions=False) as c:
        assert login(c, "gov1" if "annual" in url else "dsl1").status_code == 303
        assert c.get(url).status_code == status


def test_bad_numbers_in_posts_are_404(client_for):
    c = client_for("dsl1")
    for url in ("/captures/99999999999999999999999/act",
                "/captures/99999999999999999999999/unlock",
                "/approvals/99999999999999999999999/approve"):
        assert post(c, url, {"op": "note", "note": "x"}, "/queue").status_code == 404, url


def test_favicon(app):
    with TestClient(app, base_url="https://testserver") as c:
        r = c.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"] == "image/x-icon"
    assert r.content[:4] == b"\x00\x00\x01\x00"
