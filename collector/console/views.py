"""Console views: each one translates a request into calls on the plain modules."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

from collector.services.accounts import DEVICE_COOKIE_MS, AuthError, BadInput, LoginThrottled
from collector.services.casework import CLOSE_REASONS, REASON_SEVERITY
from collector.services.exports import CPOMS_COLUMNS, INCIDENT_COLUMNS, ExportRange, to_csv
from collector.services.queue import PAGE_SIZE, SORT_LABELS, QueueFilters
from collector.store.screenshots import ScreenshotError, read_screenshot

from .casework_views import ROUTES as CASEWORK_ROUTES
from .dashboard_views import ROUTES as DASHBOARD_ROUTES
from .i18n import LANGUAGES
from .labels import ACTIONS, STATUSES, category_label, known_categories
from .notice_views import ROUTES as NOTICE_ROUTES
from .technician_views import ROUTES as TECHNICIAN_ROUTES
from .web import Ctx

__all__ = ["ROUTES"]

HOME = {"dsl": "/queue", "deputy_dsl": "/queue", "technician": "/devices",
        "governor": "/reports/annual", "trust_admin": "/trust", "dpo": "/audit"}


def home(ctx: Ctx) -> Response:
    return RedirectResponse(HOME.get(ctx.user.role, "/logout"), status_code=303)


def healthz(ctx: Ctx) -> Response:
    return PlainTextResponse("ok")


FAVICON = Path(__file__).parent / "static" / "favicon.ico"


def favicon(ctx: Ctx) -> Response:
    return FileResponse(FAVICON, media_type="image/x-icon")


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
    accounts = ctx.services.accounts
    device = ctx.request.cookies.get(ctx.console.device_cookie) or None
    try:
        user = accounts.authenticate(username, f.get("password", ""), ctx.ip, device)
    except LoginThrottled as e:
        ctx.audit("login.throttled", username, ip=ctx.ip)
        return _login_again(ctx, str(e), 429)
    except AuthError as e:
        ctx.audit("login.failed", username, ip=ctx.ip)
        return _login_again(ctx, str(e), 401)
    token, device = accounts.start_session(user, ctx.ip, device)
    ctx.services.audit.record(user.username, "login.ok", "", None, now_ms=ctx.now_ms, ip=ctx.ip)
    resp = RedirectResponse(_safe_next(f.get("next", "/")), status_code=303)
    ctx.console.set_cookie(resp, ctx.console.session_cookie, token, None)
    ctx.console.set_cookie(resp, ctx.console.device_cookie, device, DEVICE_COOKIE_MS // 1000)
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
    ctx.services.accounts.end_session(ctx.request.cookies.get(ctx.console.session_cookie))
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(ctx.console.session_cookie, path="/", secure=ctx.console.secure,
                       httponly=True, samesite="strict")
    return resp


def language(ctx: Ctx) -> Response:
    """The language switch at the foot of every page (CSRF-checked by the wrapper; the
    service audits the change as user.language)."""
    lang = ctx.form.get("language", "")
    if lang not in LANGUAGES:
        raise BadInput("language: choose cy (Cymraeg) or en (English)")
    ctx.services.accounts.set_language(actor=ctx.user.username, username=ctx.user.username,
                                       language=lang)
    return RedirectResponse(_safe_next(ctx.form.get("next", "/")), status_code=303)


# --- queue -----------------------------------------------------------------------------------

def _queue_values(ctx: Ctx) -> dict[str, Any]:
    f = QueueFilters.from_query(ctx.request.query_params)
    got = ctx.services.queue.keyset_page(ctx.user, f)
    rows, total = got.rows, got.total
    digest = hashlib.sha256(repr([(r.id, r.status, r.count, r.last_time) for r in rows])
                            .encode()).hexdigest()[:16]
    cats = known_categories()
    if f.category and f.category not in cats:
        cats.append(f.category)
    return {"f": f, "rows": rows, "total": total, "digest": digest,
            "sites": ctx.services.accounts.sites_of(ctx.user), "statuses": STATUSES,
            "categories": [(c, category_label(c)) for c in cats],
            "pages": max(1, -(-total // PAGE_SIZE)), "next_key": got.next_key,
            "prev_key": got.prev_key, "sorts": SORT_LABELS, "close_reasons": CLOSE_REASONS,
            "bulk": ctx.request.query_params.get("bulk", "")}


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
    qid = _qid(ctx)
    view = ctx.services.casework.load_item(ctx.user, qid)
    site = view.item["site_id"]
    if view.restricted and not view.unlocked:
        ctx.audit("capture.view_guidance", f"queue_item:{qid}", site)
    else:
        ctx.audit("capture.view", f"queue_item:{qid}", site, restricted=view.restricted)
    return ctx.render("capture.html", view=view, actions=ACTIONS, statuses=STATUSES,
                      done=ctx.request.query_params.get("done", ""),
                      close_reasons=CLOSE_REASONS, reason_severity=REASON_SEVERITY)


def capture_act(ctx: Ctx) -> Response:
    qid = _qid(ctx)
    f = ctx.form
    if "op" not in f:  # the one action form: action + status + reason + note together
        ctx.services.casework.submit(ctx.user, qid, action=f.get("action", ""),
                                     status=f.get("status", ""), reason=f.get("reason", ""),
                                     note=f.get("note", ""))
        return RedirectResponse(f"/captures/{qid}?done=saved", status_code=303)
    ctx.services.casework.act(ctx.user, qid, f.get("op", ""), f.get("value", ""),
                              f.get("note", ""), f.get("reason", ""))
    return RedirectResponse(f"/captures/{qid}?done={f.get('op', '')}", status_code=303)


def screenshot(ctx: Ctx) -> Response:
    qid = _qid(ctx)
    cid = ctx.request.path_params["cid"]
    path, site = ctx.services.casework.screenshot(ctx.user, qid, cid)
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
    ctx.services.casework.request_unlock(ctx.user, qid, ctx.form.get("reason", ""))
    return RedirectResponse(f"/captures/{qid}", status_code=303)


def approvals(ctx: Ctx) -> Response:
    pending = ctx.services.casework.pending_approvals(ctx.user)
    ctx.audit("approvals.view", "", None, shown=len(pending))
    return ctx.render("approvals.html", pending=pending)


def approve(ctx: Ctx) -> Response:
    uid = int(ctx.request.path_params["uid"])
    ctx.services.casework.approve_unlock(ctx.user, uid)
    return RedirectResponse(f"/approvals/{uid}", status_code=303)


# --- technicians -----------------------------------------------------------------------------

def device_room(ctx: Ctx) -> Response:
    ctx.services.roster.set_room(ctx.request.path_params["device_id"],
                                 ctx.form.get("room", ""), actor=ctx.user.username,
                                 user=ctx.user)
    return RedirectResponse("/devices", status_code=303)


# --- exports and reports ---------------------------------------------------------------------

def _range(ctx: Ctx) -> ExportRange:
    q = ctx.request.query_params
    return ctx.services.exports.range_for(ctx.user, q.get("site", ""), q.get("from", ""),
                                          q.get("to", ""))


def exports_page(ctx: Ctx) -> Response:
    return ctx.render("exports.html", sites=ctx.services.accounts.sites_of(ctx.user))


def _csv(ctx: Ctx, name: str, header: tuple[str, ...], rows: list[tuple[str, ...]],
         rng: ExportRange) -> Response:
    ctx.audit(f"export.{name}", "", rng.sites[0] if len(rng.sites) == 1 else None,
              rows=len(rows), sites=rng.sites, date_from=rng.date_from, date_to=rng.date_to)
    stamp = dt.datetime.fromtimestamp(ctx.now_ms / 1000, dt.UTC).strftime("%Y%m%d")
    return Response(to_csv(header, rows), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition":
                             f'attachment; filename="vigil-{name}-{stamp}.csv"'})


def incident_csv(ctx: Ctx) -> Response:
    rng = _range(ctx)
    return _csv(ctx, "incident_log", INCIDENT_COLUMNS,
                ctx.services.exports.incident_rows(ctx.user, rng), rng)


def cpoms_csv(ctx: Ctx) -> Response:
    rng = _range(ctx)
    return _csv(ctx, "cpoms", CPOMS_COLUMNS, ctx.services.exports.cpoms_rows(ctx.user, rng),
                rng)


def incident_html(ctx: Ctx) -> Response:
    rng = _range(ctx)
    rows = ctx.services.exports.incident_rows(ctx.user, rng)
    ctx.audit("export.incident_log_html", "", rng.sites[0] if len(rng.sites) == 1 else None,
              rows=len(rows), sites=rng.sites)
    return ctx.render("incident_log.html", columns=INCIDENT_COLUMNS, rows=rows, rng=rng)


def weekly(ctx: Ctx) -> Response:
    reports = ctx.services.reports
    summary = reports.weekly_for(ctx.user, ctx.request.query_params.get("site", ""))
    site = summary.site_id
    ctx.audit("report.weekly", "", site, exact=summary.exact)
    return ctx.render("weekly.html", s=summary, sites=ctx.services.accounts.sites_of(ctx.user))


def annual(ctx: Ctx) -> Response:
    reports = ctx.services.reports
    year = reports.parse_year(ctx.request.query_params.get("year"))
    site = ctx.request.query_params.get("site", "")
    report = reports.annual(ctx.user, site, year)
    ctx.audit("report.annual", "", site or None, year=year)
    return ctx.render("annual.html", r=report, sites=ctx.services.accounts.sites_of(ctx.user),
                      site=site, peak=max([n or 0 for _, n in report.months] + [1]))


ROUTES: list[tuple[str, Any, list[str], dict[str, Any]]] = [
    ("/", home, ["GET"], {}),
    ("/healthz", healthz, ["GET"], {"login": False}),
    ("/favicon.ico", favicon, ["GET"], {"login": False}),
    ("/login", login_page, ["GET"], {"login": False}),
    ("/login", login_submit, ["POST"], {"login": False}),
    ("/logout", logout, ["POST"], {}),
    ("/language", language, ["POST"], {}),
    ("/queue", queue, ["GET"], {"permission": "queue"}),
    ("/queue/rows", queue_rows, ["GET"], {"permission": "queue"}),
    ("/captures/{qid:int}", capture_page, ["GET"], {}),
    ("/captures/{qid:int}/act", capture_act, ["POST"], {}),
    ("/captures/{qid:int}/unlock", unlock_request, ["POST"], {}),
    ("/captures/{qid:int}/shots/{cid}", screenshot, ["GET"], {}),
    ("/approvals", approvals, ["GET"], {"permission": "approve"}),
    ("/approvals/{uid:int}/approve", approve, ["POST"], {"permission": "approve"}),
    ("/devices/{device_id}/room", device_room, ["POST"], {"permission": "devices"}),
    ("/exports", exports_page, ["GET"], {"permission": "export"}),
    ("/exports/incident-log.csv", incident_csv, ["GET"], {"permission": "export"}),
    ("/exports/incident-log.html", incident_html, ["GET"], {"permission": "export"}),
    ("/exports/cpoms.csv", cpoms_csv, ["GET"], {"permission": "export"}),
    ("/reports/weekly", weekly, ["GET"], {"permission": "weekly"}),
    ("/reports/annual", annual, ["GET"], {"permission": "annual"}),
]
ROUTES += DASHBOARD_ROUTES + TECHNICIAN_ROUTES
ROUTES += NOTICE_ROUTES
ROUTES += CASEWORK_ROUTES
