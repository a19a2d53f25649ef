"""Technician views: devices (sortable, silent ones marked, per-source health), enrolment
tokens (create: the secret shown once; revoke), rule versions and anonymised misfires."""

from __future__ import annotations

from typing import Any

from starlette.responses import RedirectResponse, Response

from collector.services.estate import AGE_BANDS
from collector.services.technician import DEVICE_SORTS

from .labels import fmt_time
from .web import Ctx

__all__ = ["ROUTES"]


def _devices_page(ctx: Ctx, status: int = 200, **extra: Any) -> Response:
    q = ctx.request.query_params
    sort = q.get("sort", "state")[:20]
    desc = q.get("dir", "") == "desc"
    tech = ctx.services.technician
    rows = tech.devices(ctx.user, sort, desc)
    tokens = tech.tokens(ctx.user)
    ctx.audit("devices.view", "", None, shown=len(rows), tokens=len(tokens), sort=sort)
    counts = {s: sum(1 for d in rows if d.state == s)
              for s in ("never", "silent", "attention", "ok", "revoked")}
    return ctx.render("devices.html", status, devices=rows, tokens=tokens, fmt_time=fmt_time,
                      sort=sort, desc=desc, sorts=DEVICE_SORTS, counts=counts,
                      sites=ctx.services.accounts.sites_of(ctx.user), age_bands=AGE_BANDS,
                      revoked=q.get("revoked", "")[:100], **{"secret": None, "created": None,
                                                             **extra})


def devices(ctx: Ctx) -> Response:
    return _devices_page(ctx)


def token_create(ctx: Ctx) -> Response:
    f = ctx.form
    tok, secret = ctx.services.technician.create_token(
        ctx.user, f.get("site", ""), f.get("group", ""), f.get("uses", ""), f.get("days", ""),
        f.get("age_band", ""))
    # the secret is in this one response only (Cache-Control: no-store); reloading the
    # devices page shows the token without it
    return _devices_page(ctx, 200, secret=secret, created=tok)


def token_revoke(ctx: Ctx) -> Response:
    token_id = ctx.request.path_params["token_id"]
    ctx.services.technician.revoke_token(ctx.user, token_id)
    return RedirectResponse(f"/devices?revoked={token_id}#tokens", status_code=303)


def rule_stats(ctx: Ctx) -> Response:
    stats = ctx.services.casework.rule_precision(ctx.user)
    tech = ctx.services.technician
    versions = tech.rule_history(ctx.user)
    misfires = {m.rule_id: m for m in tech.misfires(ctx.user)}
    ctx.audit("rules.stats_view", "", None, rules=len(stats),
              examples=sum(len(m.examples) for m in misfires.values()))
    return ctx.render("rule_stats.html", stats=stats, versions=versions, misfires=misfires,
                      fmt_time=fmt_time)


ROUTES: list[tuple[str, Any, list[str], dict[str, Any]]] = [
    ("/devices", devices, ["GET"], {"permission": "devices"}),
    ("/tokens", token_create, ["POST"], {"permission": "tokens"}),
    ("/tokens/{token_id}/revoke", token_revoke, ["POST"], {"permission": "tokens"}),
    ("/rules/stats", rule_stats, ["GET"], {"permission": "rule_stats"}),
]
