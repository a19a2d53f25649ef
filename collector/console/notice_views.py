"""Views for notifications, four-eyes decisions and the audit viewer: each one translates a
request into calls on collector/services/ (notifications, casework, audit_view)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.responses import RedirectResponse, Response

from collector.services.audit_view import AUDIT_COLUMNS, COMMON_ACTIONS, AuditFilters
from collector.services.exports import to_csv

from .web import Ctx

__all__ = ["ROUTES"]


def notifications(ctx: Ctx) -> Response:
    svc = ctx.services.notifications
    notices = svc.notices(ctx.user)
    svc.mark_seen(ctx.user)
    ctx.audit("notifications.view", "", None, shown=len(notices))
    return ctx.render("notifications.html", notices=notices)


def _uid(ctx: Ctx) -> int:
    return int(ctx.request.path_params["uid"])


def approval_page(ctx: Ctx) -> Response:
    uid = _uid(ctx)
    req = ctx.services.casework.unlock_request(ctx.user, uid)
    ctx.audit("approvals.view_request", f"unlock:{uid}", req["site_id"], state=req["state"])
    return ctx.render("approval.html", req=req)


def decline(ctx: Ctx) -> Response:
    uid = _uid(ctx)
    ctx.services.casework.decline_unlock(ctx.user, uid, ctx.form.get("reason", ""))
    return RedirectResponse(f"/approvals/{uid}", status_code=303)


def audit_page(ctx: Ctx) -> Response:
    f = AuditFilters.from_query(ctx.request.query_params)
    page = ctx.services.audit_view.page(ctx.user, f)  # audited there, as audit.view
    return ctx.render("audit.html", f=f, page=page, actions=COMMON_ACTIONS,
                      next_query=f.query_string(page.next_before) if page.next_before else "",
                      csv_query=f.query_string())


def audit_csv(ctx: Ctx) -> Response:
    f = AuditFilters.from_query(ctx.request.query_params)
    rows = ctx.services.audit_view.export_rows(ctx.user, f)  # audited there, as audit.export
    stamp = dt.datetime.fromtimestamp(ctx.now_ms / 1000, dt.UTC).strftime("%Y%m%d")
    return Response(to_csv(AUDIT_COLUMNS, rows), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition":
                             f'attachment; filename="vigil-audit-{stamp}.csv"'})


ROUTES: list[tuple[str, Any, list[str], dict[str, Any]]] = [
    ("/notifications", notifications, ["GET"], {}),
    ("/approvals/{uid:int}", approval_page, ["GET"], {"permission": "approve"}),
    ("/approvals/{uid:int}/decline", decline, ["POST"], {"permission": "approve"}),
    ("/audit", audit_page, ["GET"], {"permission": "audit"}),
    ("/audit.csv", audit_csv, ["GET"], {"permission": "audit"}),
]
