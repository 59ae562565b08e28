"""Server-rendered SVG charts for the usage dashboard: no JavaScript, every label escaped, a title and description each.

Each chart sits beside a data table on the page; the SVG is a picture of the same numbers (role="img").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

# Colour-blind-safe palette (Okabe-Ito, darkened where needed for 3:1 contrast against white).
PALETTE = ("#0b5cad", "#b35806", "#1a7a4c", "#8e3b8e", "#a4161a", "#55606e", "#7a6200", "#006d77")
_TEXT = "#1b1f24"
_GRID = "#c9d1d9"


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(value)


def _fmt(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _frame(chart_id: str, title: str, description: str, width: int, height: int, body: list[str]) -> str:
    return (
        f'<svg class="chart" id="{escape(chart_id)}" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title><desc id="{escape(chart_id)}-desc">{escape(description)}</desc>'
        + "".join(body)
        + "</svg>"
    )


def stacked_bars(chart_id: str, title: str, description: str, labels: Sequence[str], series: Sequence[Series],
                 width: int = 720, height: int = 260) -> str:
    """Vertical bars, one per label (a day), stacked by series (roles, or input/output tokens), with a legend."""
    left, right, top, bottom = 48, 12, 12, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top_value = _nice_max(max(totals, default=0))
    body: list[str] = []
    for tick in range(5):
        value = top_value * tick / 4
        y = top + plot_h - plot_h * tick / 4
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="{_GRID}" stroke-width="1"/>')
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="{_TEXT}">{_fmt(value)}</text>')
    slot = plot_w / max(len(labels), 1)
    bar_w = max(slot * 0.7, 1.0)
    label_every = max(1, len(labels) // 10)
    for i, label in enumerate(labels):
        x = left + slot * i + (slot - bar_w) / 2
        y = top + plot_h
        for index, s in enumerate(series):
            value = s.values[i]
            if value <= 0:
                continue
            h = plot_h * value / top_value
            y -= h
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{PALETTE[index % len(PALETTE)]}">'
                f"<title>{escape(label)}: {escape(s.name)} {_fmt(value)}</title></rect>"
            )
        if i % label_every == 0:
            body.append(f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 14}" font-size="10" text-anchor="middle" fill="{_TEXT}">{escape(label)}</text>')
    legend_x = left
    for index, s in enumerate(series):
        body.append(f'<rect x="{legend_x}" y="{height - 22}" width="12" height="12" fill="{PALETTE[index % len(PALETTE)]}"/>')
        body.append(f'<text x="{legend_x + 16}" y="{height - 12}" font-size="12" fill="{_TEXT}">{escape(s.name)}</text>')
        legend_x += 24 + 8 * len(s.name)
    return _frame(chart_id, title, description, width, height, body)


def horizontal_bars(chart_id: str, title: str, description: str, items: Sequence[tuple[str, float]], width: int = 720) -> str:
    """One bar per item (collections by use), longest first, labelled with name and value."""
    row, label_w, top = 28, 220, 8
    height = top * 2 + row * max(len(items), 1)
    top_value = _nice_max(max((v for _, v in items), default=0))
    plot_w = width - label_w - 70
    body: list[str] = []
    for index, (name, value) in enumerate(items):
        y = top + row * index
        w = plot_w * value / top_value
        shown = name if len(name) <= 30 else name[:29] + "…"
        body.append(f'<text x="{label_w - 8}" y="{y + 18}" font-size="12" text-anchor="end" fill="{_TEXT}">{escape(shown)}</text>')
        body.append(f'<rect x="{label_w}" y="{y + 5}" width="{w:.1f}" height="18" fill="{PALETTE[0]}"><title>{escape(name)}: {_fmt(value)}</title></rect>')
        body.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 18}" font-size="12" fill="{_TEXT}">{_fmt(value)}</text>')
    if not items:
        body.append(f'<text x="{label_w}" y="{top + 18}" font-size="12" fill="{_TEXT}">No data in this period.</text>')
    return _frame(chart_id, title, description, width, height, body)
