"""Insights in the admin: the campaign insights list (with totals), Resync now, and the card's insights block.

Nothing here calls Microsoft: Resync now queues the same job the 05:00 UTC schedule queues.
"""

from __future__ import annotations

from datetime import date, timedelta

from django.contrib import admin, messages
from django.db.models import Count, Sum
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe

from adsync import jobs
from adsync.admin.read_only import ReadOnlyAdmin
from adsync.formats import count
from adsync.insights.chart import COUNTS_NOTE, LAG_NOTE, daily_totals, spend_conversions_svg
from adsync.links import sync_log_url
from adsync.models import CampaignInsight, Connection


def insights_url(**filters) -> str:
    return reverse("admin:adsync_campaigninsight_changelist") + ("?" + urlencode(filters) if filters else "")


# --- Resync now (an action on the Connection admin) -------------------------------------------

@admin.action(description="Resync now (campaign insights, last 14 days)", permissions=["operate"])
def resync_now(modeladmin: admin.ModelAdmin, request, queryset) -> None:
    """Queue one insights sync per selected active connection; say which were not queued and why."""
    connections = list(queryset.select_related("site"))
    active = [c for c in connections if c.is_active]
    inactive = [c for c in connections if not c.is_active]
    jobs.enqueue_insights([c.pk for c in active])
    if active:
        modeladmin.message_user(request, (
            f"Insights resync queued for {count(len(active), 'connection')}: {', '.join(str(c) for c in active)}. "
            "The worker runs it within a few minutes; the card's last sync time changes when it succeeds."),
            messages.SUCCESS)
    if inactive:
        modeladmin.message_user(request, (
            "Not queued, the connection is not active (reconnect it first): "
            + ", ".join(f"{c} ({c.get_status_display()})" for c in inactive)), messages.WARNING)


# --- The card's insights block ----------------------------------------------------------------

def insights_panel(connection: Connection) -> SafeString:
    """The card's "Insights" block: the 14-day chart, the lag note and a link to the rows."""
    if not connection.pk:
        return mark_safe("—")
    totals = daily_totals(connection)
    currency = (CampaignInsight.objects.filter(connection=connection).exclude(currency="")
                .order_by("-date").values_list("currency", flat=True).first() or "")
    return format_html(
        '<div>{}</div><p style="max-width:560px">{} {}</p><p><a href="{}">All campaign rows for this connection</a>'
        ' · <a href="{}">what adsync sent (the sync log)</a> · synced daily at 05:00 UTC; use “Resync now” to fetch '
        "them now.</p>",
        spend_conversions_svg(totals, currency), COUNTS_NOTE, LAG_NOTE,
        insights_url(connection__id__exact=connection.pk), sync_log_url(connection_id=connection.pk))


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
class CampaignInsightAdmin(ReadOnlyAdmin):
    """Campaign insights: daily numbers per campaign as Microsoft reported them, read-only."""

    list_display = ["date", "campaign_name", "campaign_id", "impressions", "clicks", "spend", "conversions",
                    "revenue", "currency", "connection", "synced_at"]
    list_filter = ["connection", ("date", DateRangeFilter)]
    list_select_related = ["connection__site"]
    search_fields = ["campaign_name", "=campaign_id"]
    show_full_result_count = False
    list_per_page = 100
    readonly_fields = [f.name for f in CampaignInsight._meta.fields]

    def changelist_view(self, request, extra_context=None):
        """Add totals over the filtered rows (all pages), one line per currency."""
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            response.context_data["insight_totals"] = insight_totals(changelist.queryset)
            response.context_data["insight_lag_note"] = LAG_NOTE
            response.context_data["insight_counts_note"] = COUNTS_NOTE
        return response


def insight_totals(queryset) -> list[dict]:
    """Sums per currency (spend in two currencies does not add up)."""
    return list(queryset.order_by().values("currency").annotate(
        rows=Count("id"), impressions=Sum("impressions"), clicks=Sum("clicks"), spend=Sum("spend"),
        conversions=Sum("conversions"), revenue=Sum("revenue")).order_by("currency"))
