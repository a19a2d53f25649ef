"""Dashboard and trust views: translate a request into DashboardService calls and charts."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from .charts import CATEGORY_COLOURS, SEVERITY_COLOURS, bars, hbars, stacked_bars
from .web import Ctx

__all__ = ["ROUTES"]


def _charts() -> dict[str, Any]:
    return {"stacked_bars": stacked_bars, "bars": bars, "hbars": hbars}


def dashboard(ctx: Ctx) -> Response:
    site = ctx.request.query_params.get("site", "")[:100]
    d = ctx.services.dashboard.dashboard(ctx.user, site)
    ctx.audit("dashboard.view", "", site or (d.sites[0][0] if len(d.sites) == 1 else None),
              sites=[s for s, _n in d.sites], exact=d.exact)
    # colours by position among the categories shown, so no two in one chart look alike
    _ = ctx.tr
    cat_series = [(k, _(label), CATEGORY_COLOURS[i % len(CATEGORY_COLOURS)], row)
                  for i, ((k, label), row) in enumerate(zip(d.by_category.keys,
                                                            d.by_category.cells, strict=True))]
    sev_series = [(k, label, SEVERITY_COLOURS.get(k, "#5b6570"), row)
                  for (k, label), row in zip(d.by_severity.keys, d.by_severity.cells,
                                             strict=True)]
    return ctx.render("dashboard.html", d=d, cat_series=cat_series, sev_series=sev_series,
                      fa_items=[(w.week, w.median_hours) for w in d.first_action],
                      fp_items=[(r.rule, r.rate) for r in d.fp_rates], **_charts())


def trust(ctx: Ctx) -> Response:
    t = ctx.services.dashboard.trust(ctx.user)
    ctx.audit("trust.view", "", None, sites=[s.site_id for s in t.schools], exact=t.exact)
    sev_series = [(str(sev), str(sev), SEVERITY_COLOURS[str(sev)],
                   [s.open_by_severity[i] for s in t.schools])
                  for i, sev in enumerate(t.severities)]
    return ctx.render("trust.html", t=t, sev_series=sev_series, **_charts())


def trust_weekly(ctx: Ctx) -> Response:
    w = ctx.services.dashboard.trust_weekly(ctx.user)
    ctx.audit("report.trust_weekly", "", None, sites=[s for s, _n in w.schools],
              exact=w.exact)
    return ctx.render("trust_weekly.html", w=w)


ROUTES: list[tuple[str, Any, list[str], dict[str, Any]]] = [
    ("/dashboard", dashboard, ["GET"], {"permission": "dashboard"}),
    ("/trust", trust, ["GET"], {"permission": "trust"}),
    ("/trust/weekly", trust_weekly, ["GET"], {"permission": "trust"}),
]
