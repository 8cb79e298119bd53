"""Insights in the admin: the campaign insights list (with totals), Resync now, and the card's chart.

Nothing here calls Microsoft: Resync now queues the same django-q2 task the 05:00 UTC schedule
queues, and the chart is drawn on the server as inline SVG from stored rows (no JS, no CDN).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from django.contrib import admin, messages
from django.db.models import Count, Sum
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.utils.html import escape, format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe

from adsync.insights import DEFAULT_DAYS, enqueue_syncs
from adsync.models import CampaignInsight, Connection

LAG_NOTE = ("Microsoft's own recent data lags 1–3 days, and conversions take 4–12 hours to appear there, so low "
            "or missing numbers for the last few days are expected and fill in on later syncs.")


def insights_url(**filters) -> str:
    return reverse("admin:adsync_campaigninsight_changelist") + ("?" + urlencode(filters) if filters else "")


# --- Resync now (an action on the Connection admin) -------------------------------------------

@admin.action(description="Resync now (campaign insights, last 14 days)", permissions=["operate"])
def resync_now(modeladmin: admin.ModelAdmin, request, queryset) -> None:
    """Queue one insights sync per selected active connection; say which were not queued and why."""
    connections = list(queryset.select_related("site"))
    active = [c for c in connections if c.is_active]
    inactive = [c for c in connections if not c.is_active]
    enqueue_syncs([c.pk for c in active])
    if active:
        modeladmin.message_user(request, (
            f"Insights resync queued for {len(active)} connection(s): {', '.join(str(c) for c in active)}. "
            "The worker runs it within a few minutes; the card's last sync time changes when it succeeds."),
            messages.SUCCESS)
    if inactive:
        modeladmin.message_user(request, (
            "Not queued, the connection is not active (reconnect it first): "
            + ", ".join(f"{c} ({c.get_status_display()})" for c in inactive)), messages.WARNING)


# --- The card's chart ---------------------------------------------------------------------------

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


def insights_panel(connection: Connection) -> SafeString:
    """The card's "Insights" block: the 14-day chart, the lag note and a link to the rows."""
    if not connection.pk:
        return mark_safe("—")
    totals = daily_totals(connection)
    currency = (CampaignInsight.objects.filter(connection=connection).exclude(currency="")
                .order_by("-date").values_list("currency", flat=True).first() or "")
    return format_html(
        '<div>{}</div><p style="max-width:560px">{}</p><p><a href="{}">All campaign rows for this connection</a>'
        " · synced daily at 05:00 UTC; use the action “Resync now” to fetch them now.</p>",
        spend_conversions_svg(totals, currency), LAG_NOTE, insights_url(connection__id__exact=connection.pk))


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


# --- The insights list ---------------------------------------------------------------------------

class DateRangeFilter(admin.FieldListFilter):
    """From / to dates (inclusive) as two date inputs in the filter sidebar; plain GET, no JavaScript."""

    template = "admin/adsync/date_range_filter.html"

    def __init__(self, field, request, params, model, model_admin, field_path):
        self.gte, self.lte = f"{field_path}__gte", f"{field_path}__lte"
        super().__init__(field, request, params, model, model_admin, field_path)  # fills used_parameters
        self.start = self._date(self.gte)
        self.end = self._date(self.lte)

    def _date(self, key: str) -> date | None:
        """A yyyy-mm-dd parameter, or None: a malformed date is ignored rather than an error page."""
        values = self.used_parameters.get(key) or []
        raw = values[-1] if isinstance(values, list) and values else values
        try:
            return parse_date(raw) if raw else None
        except ValueError:
            return None

    def expected_parameters(self) -> list[str]:
        return [self.gte, self.lte]

    def has_output(self) -> bool:
        return True

    def queryset(self, request, queryset):
        if self.start:
            queryset = queryset.filter(**{self.gte: self.start})
        if self.end:
            queryset = queryset.filter(**{self.lte: self.end})
        return queryset

    def choices(self, changelist):
        """One "choice": the form's state, plus the other filters to carry along as hidden inputs."""
        keep = [(k, v) for k, values in changelist.filter_params.items() if k not in (self.gte, self.lte)
                for v in values]
        today = timezone.now().date()
        presets = [(f"Last {n} days", changelist.get_query_string(
            {self.gte: (today - timedelta(days=n - 1)).isoformat(), self.lte: today.isoformat()})) for n in (7, 14, 30)]
        yield {
            "gte_name": self.gte, "lte_name": self.lte, "start": self.start or "", "end": self.end or "",
            "hidden": keep, "presets": presets, "selected": bool(self.start or self.end),
            "clear_url": changelist.get_query_string(remove=[self.gte, self.lte]),
        }


@admin.register(CampaignInsight)
class CampaignInsightAdmin(admin.ModelAdmin):
    """Campaign insights: daily numbers per campaign as Microsoft reported them, read-only."""

    list_display = ["date", "campaign_name", "campaign_id", "impressions", "clicks", "spend", "conversions",
                    "revenue", "currency", "connection", "synced_at"]
    list_filter = ["connection", ("date", DateRangeFilter)]
    list_select_related = ["connection__site"]
    search_fields = ["campaign_name", "=campaign_id"]
    show_full_result_count = False
    list_per_page = 100
    readonly_fields = [f.name for f in CampaignInsight._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        """Add totals over the filtered rows (all pages), one line per currency."""
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            response.context_data["insight_totals"] = insight_totals(changelist.queryset)
            response.context_data["insight_lag_note"] = LAG_NOTE
        return response


def insight_totals(queryset) -> list[dict]:
    """Sums per currency (spend in two currencies does not add up)."""
    return list(queryset.order_by().values("currency").annotate(
        rows=Count("id"), impressions=Sum("impressions"), clicks=Sum("clicks"), spend=Sum("spend"),
        conversions=Sum("conversions"), revenue=Sum("revenue")).order_by("currency"))
