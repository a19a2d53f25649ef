"""Log-in, sessions, CSRF, rate limiting, headers and host checks."""

from __future__ import annotations

from starlette.testclient import TestClient

from .conftest import csrf_of, login, post
from .support import audit_rows


def test_security_headers_on_every_page(app, world):
    with TestClient(app, base_url="https://testserver") as c:
        r = c.get("/login")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert "<script>" not in r.text  # no inline script anywhere
    assert 'src="/static/console.js' in r.text


def test_login_sets_strict_cookie_and_lands_on_queue(app, world):
    with TestClient(app, base_url="https://testserver") as c:
        r = login(c, "dsl1")
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie"
                      and v.startswith("__Host-vigil_session="))
        low = cookie.lower()
        assert "httponly" in low and "secure" in low and "samesite=strict" in low
        assert c.get("/", follow_redirects=False).headers["location"] == "/queue"
        assert c.get("/queue").status_code == 200
    assert audit_rows(world.db, "login.ok")[0]["actor"] == "dsl1"


def test_role_homes(client_for):
    assert client_for("tech1").get("/", follow_redirects=False).headers["location"] == "/devices"
    assert client_for("gov1").get("/", follow_redirects=False).headers["location"] == \
        "/reports/annual"


def test_wrong_password_then_rate_limited(app, world):
    with TestClient(app, base_url="https://testserver") as c:
        for _ in range(5):
            r = login(c, "dsl1", "wrong password!")
            assert r.status_code == 401
            assert "Wrong username or password" in r.text
        r = login(c, "dsl1")  # right password, but throttled now
        assert r.status_code == 429
        assert "Too many failed log-in attempts" in r.text
        world.clock.now += 16 * 60
        assert login(c, "dsl1").status_code == 303
    assert len(audit_rows(world.db, "login.failed")) == 5
    assert len(audit_rows(world.db, "login.throttled")) == 1


def test_unknown_user_gets_same_message(app):
    with TestClient(app, base_url="https://testserver") as c:
        r = login(c, "nobody")
    assert r.status_code == 401 and "Wrong username or password" in r.text


def test_login_form_needs_its_csrf_cookie(app, world):
    with TestClient(app, base_url="https://testserver") as c:
        r = c.post("/login", data={"username": "dsl1", "password": "x", "csrf": "forged"})
    assert r.status_code == 403
    assert audit_rows(world.db, "login.refused")


def test_anonymous_is_sent_to_login(app):
    with TestClient(app, base_url="https://testserver") as c:
        r = c.get("/captures/1", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login?next=/captures/1"
        assert c.post("/captures/1/act", data={}).status_code == 401


def test_open_redirect_is_refused(app):
    with TestClient(app, base_url="https://testserver") as c:
        page = c.get("/login?next=//evil.example/x")
        assert 'value="/"' in page.text
        r = c.post("/login", data={"username": "dsl1", "password": "correct horse battery staple",
                                   "csrf": csrf_of(page.text), "next": "https://evil.example"},
                   follow_redirects=False)
    assert r.headers["location"] == "/"


def test_session_idle_expiry(client_for, world):
    c = client_for("dsl1")
    assert c.get("/queue").status_code == 200
    world.clock.now += 31 * 60
    r = c.get("/queue", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_post_without_csrf_is_refused_and_audited(client_for, world):
    c = client_for("dsl1")
    r = c.post("/logout", data={}, follow_redirects=False)
    assert r.status_code == 403 and "expired" in r.text
    r = c.post("/logout", data={"csrf": "wrong"}, follow_redirects=False)
    assert r.status_code == 403
    assert len(audit_rows(world.db, "csrf.refused")) == 2
    assert c.get("/queue").status_code == 200  # still logged in


def test_cross_origin_post_is_refused(client_for):
    c = client_for("dsl1")
    token = csrf_of(c.get("/queue").text)
    r = c.post("/logout", data={"csrf": token}, headers={"Origin": "https://evil.example"},
               follow_redirects=False)
    assert r.status_code == 403


def test_logout_ends_session(client_for, world):
    c = client_for("dsl1")
    r = post(c, "/logout", {}, "/queue")
    assert r.status_code == 303
    assert c.get("/queue", follow_redirects=False).status_code == 303
    assert audit_rows(world.db, "logout")


def test_host_header_is_checked(app):
    with TestClient(app, base_url="https://evil.example") as c:
        r = c.get("/login")
    assert r.status_code == 400


def test_healthz_needs_no_login(app):
    with TestClient(app, base_url="https://testserver") as c:
        assert c.get("/healthz").text == "ok"


def test_one_address_guessing_many_accounts_locks_nobody_else_out(app, world):
    """Staff behind one reverse proxy share an address: guessing at 20 accounts from it must
    not lock out the deputy DSL who types the right password (issue 14)."""
    with TestClient(app, base_url="https://testserver") as c:
        for i in range(20):
            assert login(c, f"guess{i}", "nope nope nope").status_code == 401
        assert login(c, "deputy1").status_code == 303
