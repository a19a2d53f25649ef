"""Casework views: a pupil's page and the queue's bulk work. Each translates a request into
one service call; the services authorise, scope and decide."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from collector.services.accounts import BadInput
from collector.services.casework import MAX_ID

from .labels import STATUSES
from .web import Ctx

__all__ = ["ROUTES"]


def pupil_page(ctx: Ctx) -> Response:
    site = ctx.request.path_params["site"]
    username = ctx.request.path_params["username"]
    q = ctx.request.query_params
    view = ctx.services.pupils.page(ctx.user, site, username, after=q.get("after", ""),
                                    before=q.get("before", ""))
    ctx.audit("pupil.view", f"pupil:{site}/{username}", site, shown=len(view.items),
              page_key=bool(q.get("after") or q.get("before")))
    return ctx.render("pupil.html", p=view)


def _ids(ctx: Ctx) -> list[int]:
    lists: dict[str, list[str]] = getattr(ctx.request.state, "form_lists", {})
    out = []
    for raw in lists.get("item", []):
        if not raw.isdigit() or len(raw) > 19 or not 0 < int(raw) <= MAX_ID:
            raise BadInput(f"item: {raw[:30]!r} is not a queue item number")
        out.append(int(raw))
    return out


def queue_bulk(ctx: Ctx) -> Response:
    f = ctx.form
    result = ctx.services.casework.bulk(ctx.user, _ids(ctx), f.get("status", ""),
                                        f.get("reason", ""), f.get("note", ""))
    back = f.get("back", "")
    back = back if back.startswith("/queue") and not back.startswith("//") else "/queue"
    return ctx.render("queue_bulk.html", result=result, status_label=STATUSES[result.status],
                      reason=" ".join(f.get("reason", "").split()), back=back)


ROUTES: list[tuple[str, Any, list[str], dict[str, Any]]] = [
    ("/pupils/{site}/{username}", pupil_page, ["GET"], {"permission": "capture"}),
    ("/queue/bulk", queue_bulk, ["POST"], {"permission": "queue"}),
]
