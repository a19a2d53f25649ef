"""Server-side SVG charts for the dashboard: no JavaScript, nothing fetched, CSP-clean
(presentation attributes only, no inline style).

Each chart is an ``<svg role="img">`` with a ``<title>`` and ``<desc>`` naming what it shows;
every bar is a ``<rect class="bar">`` with ``data-key``/``data-value`` and its own
``<title>`` (a tooltip), and the page puts a table with the same numbers beside it. A
withheld count (the small-number rule) is drawn as no bar and a "·" mark, never as zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup, escape

from .i18n import Translate

__all__ = ["CATEGORY_COLOURS", "SEVERITY_COLOURS", "bars", "hbars", "stacked_bars"]

SEVERITY_COLOURS = {"5": "#b00020", "4": "#d35400", "3": "#e0a800", "2": "#3a7bd5",
                    "1": "#8a96a3"}
CATEGORY_COLOURS = ("#0b5cad", "#d35400", "#2e8540", "#8e44ad", "#c0392b", "#16a085",
                    "#b7950b", "#5d6d7e", "#e84393", "#1abc9c", "#7f8c8d", "#a04000")
WITHHELD = "#9aa4ae"
_W, _H = 720, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 12, 14, 40


def _nice_max(v: float) -> float:
    """The axis top: 1, 2 or 5 times a power of ten, at least ``v``."""
    if v <= 0:
        return 1
    p = 10.0 ** math.floor(math.log10(v))
    return float(next(m * p for m in (1, 2, 5, 10) if m * p >= v))


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


def _head(cid: str, title: str, desc: str, w: int, h: int) -> list[str]:
    return [f'<svg class="chart" id="{escape(cid)}" role="img" viewBox="0 0 {w} {h}" '
            f'width="{w}" height="{h}" aria-labelledby="{escape(cid)}-t {escape(cid)}-d" '
            'xmlns="http://www.w3.org/2000/svg">',
            f'<title id="{escape(cid)}-t">{escape(title)}</title>',
            f'<desc id="{escape(cid)}-d">{escape(desc)}</desc>']


def _axis(top: float, unit: str) -> list[str]:
    out = []
    plot_h = _H - _TOP - _BOTTOM
    for frac in (0, 0.5, 1):
        y = _TOP + plot_h * (1 - frac)
        out.append(f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" '
                   f'y2="{y:.1f}" stroke="#d8dde3" stroke-width="1"/>')
        out.append(f'<text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
                   f'font-size="11" fill="#5b6570">{escape(_fmt(top * frac))}{escape(unit)}'
                   '</text>')
    return out


def stacked_bars(cid: str, title: str, columns: Sequence[str],
                 series: Sequence[tuple[str, str, str, Sequence[int | None]]],
                 _: Translate) -> Markup:
    """One bar per column (week), stacked by series: (key, label, colour, values)."""
    totals = [sum(v or 0 for _k, _l, _c, vals in series for v in [vals[i]])
              for i in range(len(columns))]
    top = _nice_max(max(totals, default=0))
    withheld = any(v is None for s in series for v in s[3])
    desc = _("Bars per week, stacked by {what}.", what=", ".join(s[1] for s in series)
             or _("nothing yet"))
    if withheld:
        desc += " " + _("Small counts are withheld and drawn as no bar (·).")
    out = _head(cid, title, desc, _W, _H) + _axis(top, "")
    plot_h = _H - _TOP - _BOTTOM
    slot = (_W - _LEFT - _RIGHT) / max(1, len(columns))
    bar_w = slot * 0.62
    for i, col in enumerate(columns):
        x = _LEFT + slot * i + (slot - bar_w) / 2
        y = float(_TOP + plot_h)
        marks = 0
        for key, label, colour, values in series:
            v = values[i]
            if v is None:
                marks += 1
                continue
            if not v:
                continue
            h = plot_h * v / top
            y -= h
            out.append(f'<rect class="bar" data-key="{escape(key)}" data-col="{i}" '
                       f'data-value="{v}" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                       f'height="{h:.1f}" fill="{colour}"><title>{escape(col)}: '
                       f'{escape(label)} {v}</title></rect>')
        if marks:
            out.append(f'<text class="withheld" x="{x + bar_w / 2:.1f}" y="{y - 4:.1f}" '
                       f'text-anchor="middle" font-size="14" fill="{WITHHELD}">·<title>'
                       f'{escape(_("{n} withheld", n=marks))}</title></text>')
        out.append(f'<text class="label" x="{x + bar_w / 2:.1f}" y="{_H - _BOTTOM + 16}" '
                   f'text-anchor="middle" font-size="11" fill="#1b1f24">{escape(col)}</text>')
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 (every value in it went through escape())


def bars(cid: str, title: str, items: Sequence[tuple[str, float | None]], colour: str,
         _: Translate, unit: str = "") -> Markup:
    """One vertical bar per (label, value); None is withheld (or nothing to measure)."""
    top = _nice_max(max((v or 0 for _l, v in items), default=0))
    desc = "; ".join(f"{label}: {_fmt(v) + unit if v is not None else _('not shown')}"
                     for label, v in items) or _("nothing yet")
    out = _head(cid, title, desc, _W, _H) + _axis(top, unit)
    plot_h = _H - _TOP - _BOTTOM
    slot = (_W - _LEFT - _RIGHT) / max(1, len(items))
    bar_w = min(slot * 0.62, 90)
    for i, (label, v) in enumerate(items):
        x = _LEFT + slot * i + (slot - bar_w) / 2
        if v is None:
            out.append(f'<text class="withheld" x="{x + bar_w / 2:.1f}" '
                       f'y="{_TOP + plot_h - 4}" text-anchor="middle" font-size="14" '
                       f'fill="{WITHHELD}">·<title>{escape(label)}: '
                       f'{escape(_("not shown"))}</title></text>')
        elif v > 0:
            h = plot_h * v / top
            out.append(f'<rect class="bar" data-key="{escape(label)}" data-col="{i}" '
                       f'data-value="{_fmt(v)}" x="{x:.1f}" y="{_TOP + plot_h - h:.1f}" '
                       f'width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}"><title>'
                       f'{escape(label)}: {escape(_fmt(v) + unit)}</title></rect>')
        out.append(f'<text class="label" x="{x + bar_w / 2:.1f}" y="{_H - _BOTTOM + 16}" '
                   f'text-anchor="middle" font-size="11" fill="#1b1f24">'
                   f'{escape(label[:18])}</text>')
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 (every value in it went through escape())


def hbars(cid: str, title: str, items: Sequence[tuple[str, float | None]], colour: str,
          _: Translate) -> Markup:
    """Horizontal bars of a rate from 0 to 1 per (label, rate); None is withheld."""
    row_h, left, width = 24, 220, _W
    height = _TOP + row_h * max(1, len(items)) + 24
    desc = "; ".join(f"{label}: {f'{v:.0%}' if v is not None else _('not shown')}"
                     for label, v in items) or _("nothing reviewed yet")
    out = _head(cid, title, desc, width, height)
    plot_w = width - left - 60
    for frac in (0, 0.5, 1):
        x = left + plot_w * frac
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" '
                   f'y2="{height - 20}" stroke="#d8dde3" stroke-width="1"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{height - 6}" text-anchor="middle" '
                   f'font-size="11" fill="#5b6570">{frac:.0%}</text>')
    if not items:
        out.append(f'<text class="empty" x="{left}" y="{_TOP + 16}" font-size="12" '
                   f'fill="#5b6570">{escape(_("Nothing reviewed yet."))}</text>')
    for i, (label, v) in enumerate(items):
        y = _TOP + row_h * i
        out.append(f'<text class="label" x="{left - 8}" y="{y + 16}" text-anchor="end" '
                   f'font-size="12" fill="#1b1f24">{escape(label[:34])}</text>')
        if v is None:
            out.append(f'<text class="withheld" x="{left + 6}" y="{y + 16}" font-size="12" '
                       f'fill="{WITHHELD}">{escape(_("not shown (fewer than 3)"))}</text>')
            continue
        w = plot_w * max(0.0, min(1.0, v))
        out.append(f'<rect class="bar" data-key="{escape(label)}" data-col="{i}" '
                   f'data-value="{v:.4f}" x="{left}" y="{y + 4}" width="{w:.1f}" '
                   f'height="{row_h - 8}" fill="{colour}"><title>{escape(label)}: '
                   f'{v:.0%}</title></rect>')
        out.append(f'<text class="value" x="{left + w + 6:.1f}" y="{y + 16}" font-size="12" '
                   f'fill="#1b1f24">{v:.0%}</text>')
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 (every value in it went through escape())
