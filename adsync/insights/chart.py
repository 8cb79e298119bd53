"""The card's insights chart: spend and conversions per day, drawn on the server as inline SVG.

Nothing is fetched and no script runs: the chart is built from stored CampaignInsight rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from adsync.insights.sync import DEFAULT_DAYS
from adsync.models import CampaignInsight, Connection

# What the insights numbers count, said on the card and the insights list beside the sync log's own count.
COUNTS_NOTE = ("These are Microsoft's numbers: its conversions count every source Microsoft attributes to the "
               "campaigns' clicks (the UET tag, other imports, and what adsync sent), so they differ from the sync "
               "log, which lists only what adsync sent.")
LAG_NOTE = ("Microsoft's own recent data lags 1–3 days, and conversions take 4–12 hours to appear there, so low "
            "or missing numbers for the last few days are expected and fill in on later syncs.")


@dataclass(frozen=True)
class DayTotal:
    day: date
    spend: Decimal
    conversions: Decimal


def daily_totals(connection: Connection, days: int = DEFAULT_DAYS, today: date | None = None) -> list[DayTotal]:
    """Spend and conversions per day over all campaigns, one entry per day (zero where no row)."""
    end = today or timezone.now().date()
    start = end - timedelta(days=days - 1)
    sums = {row["date"]: row for row in CampaignInsight.objects.filter(
        connection=connection, date__range=(start, end)).values("date").annotate(
        spend=Sum("spend"), conversions=Sum("conversions"))}
    return [DayTotal(d, sums.get(d, {}).get("spend") or Decimal(0), sums.get(d, {}).get("conversions") or Decimal(0))
            for d in (start + timedelta(days=i) for i in range(days))]


def spend_conversions_svg(totals: list[DayTotal], currency: str = "") -> SafeString:
    """Bars for spend (left scale), a line for conversions (right scale), one slot per day."""
    width, height, left, right, top, bottom = 560, 190, 56, 56, 22, 30
    slot = (width - left - right) / max(1, len(totals))
    plot_h = height - top - bottom
    max_spend = max((t.spend for t in totals), default=Decimal(0)) or Decimal(1)
    max_conv = max((t.conversions for t in totals), default=Decimal(0)) or Decimal(1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'role="img" aria-label="Spend and conversions per day, last 14 days" '
        'style="font:11px sans-serif;background:#fff;border:1px solid #ddd">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" fill="#2f6fdf">{_fmt(max_spend)}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" fill="#2f6fdf">0</text>',
        f'<text x="{width - right + 4}" y="{top + 4}" fill="#c2410c">{_fmt(max_conv)}</text>',
        f'<text x="{width - right + 4}" y="{top + plot_h}" fill="#c2410c">0</text>',
        f'<text x="{left}" y="{top - 8}" fill="#2f6fdf">■ spend {escape(currency)}</text>',
        f'<text x="{width - right}" y="{top - 8}" text-anchor="end" fill="#c2410c">● conversions</text>',
    ]
    points = []
    for i, t in enumerate(totals):
        x = left + i * slot
        bar_h = float(t.spend / max_spend) * plot_h
        cy = top + plot_h - float(t.conversions / max_conv) * plot_h
        cx = x + slot / 2
        points.append(f"{cx:.1f},{cy:.1f}")
        label = escape(f"{t.day:%a %d %b}: spend {_fmt(t.spend)} {currency}, conversions {_fmt(t.conversions)}")
        parts.append(f'<g><title>{label}</title><rect x="{x + 2:.1f}" y="{top + plot_h - bar_h:.1f}" '
                     f'width="{slot - 4:.1f}" height="{bar_h:.1f}" fill="#2f6fdf" opacity="0.75"/>'
                     f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="#c2410c"/></g>')
        if (len(totals) - 1 - i) % 2 == 0:  # every other day, always including today
            parts.append(f'<text x="{cx:.1f}" y="{height - 10}" text-anchor="middle" fill="#555">{t.day:%d %b}</text>')
    parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#c2410c" stroke-width="1.5"/>')
    if not any(t.spend or t.conversions for t in totals):
        parts.append(f'<text x="{width / 2:.0f}" y="{top + plot_h / 2:.0f}" text-anchor="middle" fill="#555">'
                     "No insights stored for these days yet</text>")
    parts.append("</svg>")
    # Every interpolated value is a number, a date or escaped text: safe to mark.
    return mark_safe("".join(parts))


def _fmt(value: Decimal) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}".rstrip("0").rstrip(".")
