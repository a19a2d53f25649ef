"""Console views: each one translates a request into calls on the plain modules."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from typing import Any
from urllib.parse import urlsplit

from starlette.responses import PlainTextResponse, RedirectResponse, Response

from collector.store.screenshots import ScreenshotError, read_screenshot

from . import capture, exports, reports
from .audit import audit
from .auth import AuthError, LoginThrottled, authenticate, create_session, destroy_session
from .capture import BadAction, Refused
from .labels import ACTIONS, STATUSES, category_label, fmt_time, known_categories
from .queue import PAGE_SIZE, QueueFilters, queue_page, user_sites
from .web import Ctx

__all__ = ["ROUTES"]

HOME = {"dsl": "/queue", "deputy_dsl": "/queue", "technician": "/devices",
        "governor": "/reports/annual", "trust_admin": "/reports/weekly"}


def home(ctx: Ctx) -> Response:
    return RedirectResponse(HOME.get(ctx.user.role, "/logout"), status_code=303)


def healthz(ctx: Ctx) -> Response:
    return PlainTextResponse("ok")


def _safe_next(target: str) -> str:
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def login_page(ctx: Ctx) -> Response:
    token = secrets.token_urlsafe(24)
    resp = ctx.render("login.html", login_csrf=token,
                      next=_safe_next(ctx.request.query_params.get("next", "/")), error="")
    ctx.console.set_cookie(resp, ctx.console.login_cookie, token, 3600)
    return resp


def login_submit(ctx: Ctx) -> Response:
    f = ctx.form
    cookie = ctx.request.cookies.get(ctx.console.login_cookie, "")
    username = f.get("username", "").strip()[:100]
    if not cookie or not secrets.compare_digest(cookie, f.get("csrf", "")):
        ctx.audit("login.refused", username, reason="csrf")
        return ctx.render("error.html", 403, message="The log-in form expired; reload it.")
    try:
        user = authenticate(ctx.conn, username, f.get("password", ""), ctx.ip, ctx.now_ms)
    except LoginThrottled as e:
        ctx.audit("login.throttled", username, ip=ctx.ip)
        return _login_again(ctx, str(e), 429)
    except AuthError as e:
        ctx.audit("login.failed", username, ip=ctx.ip)
        return _login_again(ctx, str(e), 401)
    token = create_session(ctx.conn, user, ctx.ip, ctx.now_ms)
    audit(ctx.conn, ctx.now_ms, user.username, "login.ok", "", None, {"ip": ctx.ip})
    resp = RedirectResponse(_safe_next(f.get("next", "/")), status_code=303)
    ctx.console.set_cookie(resp, ctx.console.session_cookie, token, None)
    resp.delete_cookie(ctx.console.login_cookie, path="/", secure=ctx.console.secure,
                       httponly=True, samesite="strict")
    return resp


def _login_again(ctx: Ctx, error: str, status: int) -> Response:
    token = secrets.token_urlsafe(24)
    resp = ctx.render("login.html", status, login_csrf=token,
                      next=_safe_next(ctx.form.get("next", "/")), error=error)
    ctx.console.set_cookie(resp, ctx.console.login_cookie, token, 3600)
    return resp


def logout(ctx: Ctx) -> Response:
    ctx.audit("logout")
    destroy_session(ctx.conn, ctx.request.cookies.get(ctx.console.session_cookie))
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(ctx.console.session_cookie, path="/", secure=ctx.console.secure,
                       httponly=True, samesite="strict")
    return resp


# --- queue -----------------------------------------------------------------------------------

def _queue_values(ctx: Ctx) -> dict[str, Any]:
    f = QueueFilters.from_query(ctx.request.query_params)
    rows, total = queue_page(ctx.conn, ctx.user, f)
    digest = hashlib.sha256(repr([(r.id, r.status, r.count, r.last_time) for r in rows])
                            .encode()).hexdigest()[:16]
    cats = known_categories()
    if f.category and f.category not in cats:
        cats.append(f.category)
    return {"f": f, "rows": rows, "total": total, "digest": digest,
            "sites": user_sites(ctx.conn, ctx.user), "statuses": STATUSES,
            "categories": [(c, category_label(c)) for c in cats],
            "pages": max(1, -(-total // PAGE_SIZE))}


def queue(ctx: Ctx) -> Response:
    values = _queue_values(ctx)
    f: QueueFilters = values["f"]
    ctx.audit("queue.view", "", f.site or None, filters=f.query_string(), shown=len(values["rows"]))
    return ctx.render("queue.html", **values)


def queue_rows(ctx: Ctx) -> Response:
    """The table body only, polled by static/queue.js (views of the page itself are audited)."""
    values = _queue_values(ctx)
    resp = ctx.render("_queue_rows.html", **values)
    resp.headers["X-Queue-Digest"] = values["digest"]
    resp.headers["X-Queue-Total"] = str(values["total"])
    return resp


# --- one capture -----------------------------------------------------------------------------

def _qid(ctx: Ctx) -> int:
    return int(ctx.request.path_params["qid"])


def capture_page(ctx: Ctx) -> Response:
    view = capture.load_item(ctx.conn, ctx.user, _qid(ctx), ctx.now_ms)
    site = view.item["site_id"]
    if view.restricted and not view.unlocked:
        ctx.audit("capture.view_guidance", f"queue_item:{_qid(ctx)}", site)
    else:
        ctx.audit("capture.view", f"queue_item:{_qid(ctx)}", site, restricted=view.restricted)
    return ctx.render("capture.html", view=view, actions=ACTIONS, statuses=STATUSES,
                      done=ctx.request.query_params.get("done", ""))


def capture_act(ctx: Ctx) -> Response:
    qid = _qid(ctx)
    f = ctx.form
    capture.act(ctx.conn, ctx.user, qid, f.get("op", ""), f.get("value", ""), f.get("note", ""),
                ctx.now_ms)
    return RedirectResponse(f"/captures/{qid}?done={f.get('op', '')}", status_code=303)


def screenshot(ctx: Ctx) -> Response:
    qid = _qid(ctx)
    cid = ctx.request.path_params["cid"]
    path = capture.screenshot_path(ctx.conn, ctx.user, qid, cid)
    site = ctx.conn.execute("SELECT site_id FROM queue_items WHERE id = ?", (qid,)).fetchone()[0]
    try:
        data = read_screenshot(ctx.console.data_dir, path)
    except (ScreenshotError, OSError) as e:
        ctx.audit("screenshot.error", f"capture:{cid}", site, error=type(e).__name__)
        return PlainTextResponse("The screenshot could not be read.", status_code=500)
    ctx.audit("screenshot.view", f"capture:{cid}", site, queue_item=qid)
    kind = ("image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
            if data.startswith(b"\xff\xd8") else "image/webp" if data[8:12] == b"WEBP"
            else "application/octet-stream")
    return Response(data, media_type=kind, headers={"Content-Disposition": "inline"})


def unlock_request(ctx: Ctx) -> Response:
    qid = _qid(ctx)
    capture.request_unlock(ctx.conn, ctx.user, qid, ctx.form.get("reason", ""), ctx.now_ms)
    return RedirectResponse(f"/captures/{qid}", status_code=303)


def approvals(ctx: Ctx) -> Response:
    pending = capture.pending_approvals(ctx.conn, ctx.user, ctx.now_ms)
    ctx.audit("approvals.view", "", None, shown=len(pending))
    return ctx.render("approvals.html", pending=pending)


def approve(ctx: Ctx) -> Response:
    capture.approve_unlock(ctx.conn, ctx.user, int(ctx.request.path_params["uid"]), ctx.now_ms)
    return RedirectResponse("/approvals", status_code=303)


# --- technicians -----------------------------------------------------------------------------

def devices(ctx: Ctx) -> Response:
    sites = user_sites(ctx.conn, ctx.user)
    marks = ",".join("?" * len(sites)) or "NULL"
    rows = ctx.conn.execute(
        f"SELECT id, site_id, group_name, hostname, os, agent_version, rules_version, room, "
        f"last_seen_at, spool_depth, drops, revoked_at FROM devices WHERE site_id IN ({marks}) "
        f"ORDER BY site_id, room, hostname LIMIT 5000", sites).fetchall()
    tokens = ctx.conn.execute(
        f"SELECT id, site_id, group_name, max_uses, uses, expires_at, revoked_at, created_by "
        f"FROM enrol_tokens WHERE site_id IN ({marks}) ORDER BY created_at DESC LIMIT 200",
        sites).fetchall()  # never the secret: only its hash is stored, and not shown
    ctx.audit("devices.view", "", None, shown=len(rows))
    return ctx.render("devices.html", devices=rows, tokens=tokens, fmt_time=fmt_time,
                      now_ms=ctx.now_ms, drops=_drops)


def _drops(raw: str | None) -> str:
    """'spool_full 3, rejected:too_big 1' from the devices.drops JSON (empty when none)."""
    try:
        counts = json.loads(raw or "{}")
    except ValueError:
        return "unreadable"
    if not isinstance(counts, dict):
        return "unreadable"
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)


def device_room(ctx: Ctx) -> Response:
    dev_id = ctx.request.path_params["device_id"]
    row = ctx.conn.execute("SELECT site_id FROM devices WHERE id = ?", (dev_id,)).fetchone()
    if row is None or not ctx.user.has_site(row[0]):
        raise Refused(404, "no such device", row[0] if row else None)
    room = ctx.form.get("room", "").strip()[:100]
    ctx.conn.execute("UPDATE devices SET room = ? WHERE id = ?", (room or None, dev_id))
    ctx.audit("device.room", f"device:{dev_id}", row[0], room=room)
    return RedirectResponse("/devices", status_code=303)


def rule_stats(ctx: Ctx) -> Response:
    stats = capture.rule_precision(ctx.conn, user_sites(ctx.conn, ctx.user))
    versions = ctx.conn.execute(
        "SELECT version, content_hash, created_at, published_by, active, note "
        "FROM rule_versions ORDER BY version DESC LIMIT 50").fetchall()
    ctx.audit("rules.stats_view", "", None)
    return ctx.render("rule_stats.html", stats=stats, versions=versions, fmt_time=fmt_time)


# --- exports and reports ---------------------------------------------------------------------

def _range(ctx: Ctx) -> exports.ExportRange:
    q = ctx.request.query_params
    sites = user_sites(ctx.conn, ctx.user)
    site = q.get("site", "")
    if site and site not in sites:
        raise Refused(404, "site not yours", site)
    return exports.ExportRange([site] if site else sites, q.get("from", ""), q.get("to", ""))


def exports_page(ctx: Ctx) -> Response:
    return ctx.render("exports.html", sites=user_sites(ctx.conn, ctx.user))


def _csv(ctx: Ctx, name: str, header: tuple[str, ...], rows: list[tuple[str, ...]],
         rng: exports.ExportRange) -> Response:
    ctx.audit(f"export.{name}", "", rng.sites[0] if len(rng.sites) == 1 else None,
              rows=len(rows), sites=rng.sites, date_from=rng.date_from, date_to=rng.date_to)
    stamp = dt.datetime.fromtimestamp(ctx.now_ms / 1000, dt.UTC).strftime("%Y%m%d")
    return Response(exports.to_csv(header, rows), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition":
                             f'attachment; filename="vigil-{name}-{stamp}.csv"'})


def incident_csv(ctx: Ctx) -> Response:
    rng = _range(ctx)
    return _csv(ctx, "incident_log", exports.INCIDENT_COLUMNS,
                exports.incident_rows(ctx.conn, rng), rng)


def cpoms_csv(ctx: Ctx) -> Response:
    rng = _range(ctx)
    return _csv(ctx, "cpoms", exports.CPOMS_COLUMNS, exports.cpoms_rows(ctx.conn, rng), rng)


def incident_html(ctx: Ctx) -> Response:
    rng = _range(ctx)
    rows = exports.incident_rows(ctx.conn, rng)
    ctx.audit("export.incident_log_html", "", rng.sites[0] if len(rng.sites) == 1 else None,
              rows=len(rows), sites=rng.sites)
    return ctx.render("incident_log.html", columns=exports.INCIDENT_COLUMNS, rows=rows, rng=rng)


def weekly(ctx: Ctx) -> Response:
    sites = user_sites(ctx.conn, ctx.user)
    site = ctx.request.query_params.get("site", "") or (sites[0] if sites else "")
    if site not in sites:
        raise Refused(404, "site not yours", site or None)
    summary = reports.weekly_summary(ctx.conn, site, ctx.now_ms)
    ctx.audit("report.weekly", "", site)
    return ctx.render("weekly.html", s=summary, sites=sites)


def annual(ctx: Ctx) -> Response:
    sites = user_sites(ctx.conn, ctx.user)
    this_year = dt.datetime.fromtimestamp(ctx.now_ms / 1000, dt.UTC).year
    try:
        year = int(ctx.request.query_params.get("year", this_year))
    except ValueError as e:
        raise BadAction("year: give a number such as 2026") from e
    site = ctx.request.query_params.get("site", "")
    if site and site not in sites:
        raise Refused(404, "site not yours", site)
    report = reports.annual_report(ctx.conn, [site] if site else sites, year)
    ctx.audit("report.annual", "", site or None, year=year)
    return ctx.render("annual.html", r=report, sites=sites, site=site,
                      peak=max([n for _, n in report.months] + [1]))


ROUTES: list[tuple[str, Any, list[str], dict[str, Any]]] = [
    ("/", home, ["GET"], {}),
    ("/healthz", healthz, ["GET"], {"login": False}),
    ("/login", login_page, ["GET"], {"login": False}),
    ("/login", login_submit, ["POST"], {"login": False}),
    ("/logout", logout, ["POST"], {}),
    ("/queue", queue, ["GET"], {"permission": "queue"}),
    ("/queue/rows", queue_rows, ["GET"], {"permission": "queue"}),
    ("/captures/{qid:int}", capture_page, ["GET"], {}),
    ("/captures/{qid:int}/act", capture_act, ["POST"], {}),
    ("/captures/{qid:int}/unlock", unlock_request, ["POST"], {}),
    ("/captures/{qid:int}/shots/{cid}", screenshot, ["GET"], {}),
    ("/approvals", approvals, ["GET"], {"permission": "approve"}),
    ("/approvals/{uid:int}/approve", approve, ["POST"], {"permission": "approve"}),
    ("/devices", devices, ["GET"], {"permission": "devices"}),
    ("/devices/{device_id}/room", device_room, ["POST"], {"permission": "devices"}),
    ("/rules/stats", rule_stats, ["GET"], {"permission": "rule_stats"}),
    ("/exports", exports_page, ["GET"], {"permission": "export"}),
    ("/exports/incident-log.csv", incident_csv, ["GET"], {"permission": "export"}),
    ("/exports/incident-log.html", incident_html, ["GET"], {"permission": "export"}),
    ("/exports/cpoms.csv", cpoms_csv, ["GET"], {"permission": "export"}),
    ("/reports/weekly", weekly, ["GET"], {"permission": "weekly"}),
    ("/reports/annual", annual, ["GET"], {"permission": "annual"}),
]
