"""Server-side SVG bar charts: readable without JavaScript, no charting library.

Geometry is computed in Decimal (quantities never pass through float) and
rounded to a tenth of a pixel. Every bar has a <title>, so hovering shows the
exact value in any browser; labels are escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from markupsafe import Markup, escape

from meterline.pricing.explanation import grouped

_PX = Decimal("0.1")


@dataclass(frozen=True)
class Bar:
    label: str  # x-axis label (e.g. a date)
    value: Decimal
    note: str = ""  # extra tooltip text (e.g. "not final")
    muted: bool = False  # drawn lighter (e.g. a window that is not final yet)


def _px(value: Decimal) -> str:
    text = str(value.quantize(_PX, rounding=ROUND_HALF_UP))
    return text[:-2] if text.endswith(".0") else text


def _nice_max(top: Decimal) -> Decimal:
    """The smallest 1, 2 or 5 x 10^n at or above `top` (a calm axis)."""
    if top <= 0:
        return Decimal(1)
    exponent = top.adjusted()
    for step in (1, 2, 5, 10):
        candidate = Decimal(step).scaleb(exponent)
        if candidate >= top:
            return candidate
    return Decimal(10).scaleb(exponent)


def _short(value: Decimal) -> str:
    for size, suffix in ((Decimal(10) ** 9, "G"), (Decimal(10) ** 6, "M"), (Decimal(1000), "k")):
        if abs(value) >= size:
            return f"{(value / size).normalize():f}{suffix}"
    return grouped(value.normalize()) if value == value.to_integral() else f"{value.normalize():f}"


def bar_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    unit: str = "",
    width: int = 720,
    height: int = 160,
    tone: str = "accent",
    ticks: int = 6,
) -> Markup:
    """An accessible SVG bar chart (role=img with a title and a description)."""
    left, right, top, bottom = 52, 8, 10, 22
    plot_w, plot_h = Decimal(width - left - right), Decimal(height - top - bottom)
    peak = max((b.value for b in bars), default=Decimal(0))
    axis_max = _nice_max(peak)
    total = sum((b.value for b in bars), Decimal(0))
    desc = f"{len(bars)} bars, total {_short(total)}{unit and ' ' + unit}, peak {_short(peak)}"
    parts = [
        f'<svg class="chart tone-{escape(tone)}" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="{escape(title)}" preserveAspectRatio="none">',
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>",
    ]
    for fraction in (Decimal(0), Decimal("0.5"), Decimal(1)):
        y = Decimal(top) + plot_h - plot_h * fraction
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{_px(y)}" y2="{_px(y)}"/>'
            f'<text class="axis" x="{left - 6}" y="{_px(y + 3)}" text-anchor="end">'
            f"{escape(_short(axis_max * fraction))}</text>"
        )
    if not bars:
        parts.append(
            f'<text class="empty" x="{width // 2}" y="{height // 2}" text-anchor="middle">'
            "no data</text></svg>"
        )
        return Markup("".join(parts))
    slot = plot_w / len(bars)
    gap = slot * Decimal("0.2") if slot > 4 else Decimal(0)
    every = max(1, -(-len(bars) // ticks))
    for i, b in enumerate(bars):
        h = plot_h * b.value / axis_max if b.value > 0 else Decimal(0)
        x = Decimal(left) + slot * i + gap / 2
        y = Decimal(top) + plot_h - h
        cls = "bar muted" if b.muted else "bar"
        tip = f"{b.label}: {_exact(b.value)}{unit and ' ' + unit}{b.note and ' — ' + b.note}"
        parts.append(
            f'<rect class="{cls}" x="{_px(x)}" y="{_px(y)}" width="{_px(max(slot - gap, Decimal("0.6")))}" '
            f'height="{_px(h)}"><title>{escape(tip)}</title></rect>'
        )
        if i % every == 0:
            parts.append(
                f'<text class="axis" x="{_px(x)}" y="{height - 6}">{escape(b.label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def _exact(value: Decimal) -> str:
    return grouped(value) if value == value.to_integral() else f"{value:f}"
