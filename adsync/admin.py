"""The admin: sites, the Microsoft Ads card (connections) and the sync log.

No token or secret is ever rendered: encrypted fields are excluded from every form and list,
and the site's server API secret is shown exactly once, when it is generated.
"""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from adsync import operations
from adsync.connection_card import ConnectionCardMixin  # Connect/Reconnect/Disconnect, card fields
from adsync.goals import GoalBook
from adsync.insights_admin import insights_panel, resync_now  # also registers the insights list
from adsync.large_tables import EstimatingPaginator, search_by_identifier
from adsync.microsoft.errors import remedy_hint
from adsync.models import AccountGoal, Click, Connection, Conversion, GoalMapping, Push, Site, StaffNotificationPreference
from adsync.roles import OperatorActionsMixin  # actions with permissions=["operate"]: operators only
from adsync.support import support_box

admin.site.site_header = "adsync"
admin.site.site_title = "adsync"
admin.site.index_title = "Microsoft Ads offline conversions"
admin.site.enable_nav_sidebar = False  # the sync log needs the width


def sync_log_url(**filters) -> str:
    return reverse("admin:adsync_push_changelist") + ("?" + urlencode(filters) if filters else "")


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ["name", "key", "default_currency", "has_api_secret", "created_at"]
    search_fields = ["name", "key"]
    readonly_fields = ["key", "snippet_tag", "has_api_secret", "created_at"]
    fields = ["name", "key", "snippet_tag", "allowed_origins", "default_currency", "default_country",
              "has_api_secret", "created_at"]
    actions = ["generate_api_secret"]

    @admin.display(boolean=True, description="Server API secret set")
    def has_api_secret(self, site: Site) -> bool:
        return bool(site.api_secret_hash)

    @admin.display(description="Snippet to embed on every landing page")
    def snippet_tag(self, site: Site) -> str:
        from django.conf import settings

        if not site.pk:
            return "Save the site first."
        return format_html(
            '<code>&lt;script async src="{}/t/v1/adsync.js" data-site="{}"&gt;&lt;/script&gt;</code>',
            settings.ADSYNC_PUBLIC_URL, site.key,
        )

    @admin.action(description="Generate a new server API secret (shown once)", permissions=["change"])
    def generate_api_secret(self, request, queryset):
        for site in queryset:
            secret = site.rotate_api_secret()
            self.message_user(
                request,
                f"New server API secret for {site.name} (copy it now, it is not stored and will not be shown again): "
                f"{secret}",
                messages.WARNING,
            )


def goal_book(connection: Connection) -> GoalBook:
    """One GoalBook per connection per request (cached on the instance)."""
    if not hasattr(connection, "_goal_book"):
        connection._goal_book = GoalBook(connection)
    return connection._goal_book


class GoalMappingInline(admin.TabularInline):
    """Event → Goal Name, checked against the account's cached goals, with the names to pick from."""

    model = GoalMapping
    extra = 1
    fields = ["event_name", "goal_name", "goal_check"]
    readonly_fields = ["goal_check"]

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        formset.form.base_fields["goal_name"].widget.attrs.update({"list": "adsync-goal-names", "size": 40})
        formset.form.base_fields["goal_name"].strip = False  # exact: never trimmed by us
        return formset

    @admin.display(description="Check against Microsoft Ads")
    def goal_check(self, mapping: GoalMapping) -> str:
        if not mapping.pk:
            return "—"
        book = goal_book(mapping.connection)
        if not book.known:
            return "Goal list not fetched yet (action: Refresh goal list)."
        check = book.check(mapping.goal_name)
        if check.ok:
            return format_html('<span style="color:#1a7f37">✔ exists and is active</span>')
        return format_html('<strong style="color:#b42318">⚠ {}</strong>', check.message())


class AccountGoalInline(admin.TabularInline):
    model = AccountGoal
    extra = 0
    can_delete = False
    fields = ["name", "goal_type", "status", "conversion_window_minutes", "enhanced_conversions", "first_seen_at",
              "missing_since"]
    readonly_fields = fields
    verbose_name_plural = "Conversion goals in the Microsoft Ads account (cached)"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Connection)
class ConnectionAdmin(ConnectionCardMixin, OperatorActionsMixin, admin.ModelAdmin):
    """The Microsoft Ads card."""

    list_display = ["__str__", "status_badge", "problem", "account_id", "account_name", "goal_names_mapped",
                    "last_24h", "last_flush_at", "last_insights_sync_at"]
    list_filter = ["status"]
    list_select_related = ["site"]
    search_fields = ["site__name", "account_id", "account_name"]
    inlines = [GoalMappingInline, AccountGoalInline]
    actions = ["refresh_goal_list", "send_test_conversion", resync_now, "reconnect", "refresh_token_now"]
    fieldsets = [
        (None, {"fields": ["site", "platform", "status_badge", "problem", "account_label", "account_name",
                           "account_id", "customer_id", "account_number", "goal_names_mapped",
                           "enhanced_conversions"]}),
        ("Health", {"fields": ["last_flush_at", "last_insights_sync_at", "token_health", "throttled_until",
                               "last_error", "last_error_at", "recent_pushes", "latest_push"]}),
        ("Microsoft app (optional)", {"fields": ["client_id", "client_secret", "clear_client_secret"],
                                      "classes": ["collapse"]}),
        ("Goals", {"fields": ["goals_refreshed_at", "goal_names_datalist"]}),
        ("Insights", {"fields": ["insights_chart"]}),
        ("Support", {"fields": ["support_details"]}),
    ]
    readonly_fields = ["status_badge", "problem", "account_label", "goal_names_mapped", "token_health", "latest_push",
                       "last_flush_at", "last_insights_sync_at", "token_expires_at",
                       "throttled_until", "last_error", "last_error_at", "recent_pushes", "goals_refreshed_at",
                       "goal_names_datalist", "insights_chart", "support_details"]

    @admin.display(description="Copy support details")
    def support_details(self, conn: Connection) -> str:
        return support_box(conn)

    @admin.display(description="Last 14 days")
    def insights_chart(self, conn: Connection) -> str:
        return insights_panel(conn)

    @admin.display(description="Goal names in the account")
    def goal_names_datalist(self, conn: Connection) -> str:
        if not conn.pk:
            return "—"
        names = goal_book(conn).check("").choices
        options = format_html_join("", '<option value="{}">', ((n,) for n in names))
        listing = ", ".join(f"“{n}”" for n in names) or "none cached yet (action: Refresh goal list)"
        return format_html('<datalist id="adsync-goal-names">{}</datalist>{}', options, listing)

    @admin.action(description="Refresh goal list from Microsoft Ads", permissions=["operate"])
    def refresh_goal_list(self, request, queryset):
        from django_q.tasks import async_task

        for pk in queryset.values_list("pk", flat=True):
            # Only the id crosses the queue: a pickled Connection would carry decrypted tokens.
            async_task("adsync.goals.refresh_goals_for", pk, group="adsync:goals-now")
        self.message_user(request, f"Goal list refresh queued for {queryset.count()} connection(s).")

    @admin.action(description="Send test conversion (msclkid test_msclkid_123)", permissions=["operate"])
    def send_test_conversion(self, request, queryset):
        from django.template.response import TemplateResponse

        mappings = GoalMapping.objects.filter(connection__in=queryset).select_related("connection__site")
        chosen = request.POST.get("mapping")
        if chosen:
            mapping = mappings.filter(pk=chosen).first()
            if mapping is None:
                self.message_user(request, "Pick one of the listed goal mappings.", messages.ERROR)
                return None
            push = operations.send_test_conversion(mapping)
            self.message_user(request, format_html(
                'Test conversion queued for “{}” with msclkid test_msclkid_123; Microsoft is expected to reject the '
                'click id. <a href="{}">Watch it in the sync log</a>.', mapping.goal_name,
                sync_log_url(q=push.conversion.order_id)))
            return None
        return TemplateResponse(request, "admin/adsync/send_test_conversion.html", {
            **self.admin_site.each_context(request), "title": "Send a test conversion", "mappings": mappings,
            "queryset": queryset, "action": "send_test_conversion",
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        })

    @admin.display(description="Status", ordering="status")
    def status_badge(self, conn: Connection) -> str:
        colours = {Connection.ACTIVE: "#1a7f37", Connection.TOKEN_EXPIRED: "#b35900",
                   Connection.DISCONNECTED: "#6e7781"}
        if conn.is_stale:
            return format_html('<strong style="color:{}" title="{}">Active but stale</strong>', "#9a6700",
                               "No successful insights sync in the last 24 hours")
        return format_html('<strong style="color:{}">{}</strong>', colours.get(conn.status, "#000"),
                           conn.get_status_display())

    @admin.display(description="Sync log (last 24 hours)")
    def recent_pushes(self, conn: Connection) -> str:
        if not conn.pk:
            return "-"
        since = timezone.now() - timezone.timedelta(hours=24)
        parts = []
        for status in (Push.SENT, Push.PENDING_IDENTITY, Push.ERROR, Push.QUEUED):
            count = conn.pushes.filter(status=status, created_at__gte=since).count()
            parts.append(format_html('<a href="{}">{} {}</a>',
                                     sync_log_url(connection__id__exact=conn.pk, status__exact=status),
                                     count, status))
        return format_html(" · ".join(["{}"] * len(parts)), *parts)


@admin.register(Push)
class PushAdmin(OperatorActionsMixin, admin.ModelAdmin):
    """The sync log: every push, what was sent, and Microsoft's answer verbatim."""

    list_display = ["created_at", "status", "goal_name", "msclkid_or_none", "value", "currency",
                    "order_id", "connection", "short_error"]
    actions = ["validate_dry_run", "replay_errors"]
    list_filter = ["status", "connection"]
    list_select_related = ["conversion", "connection__site"]
    search_fields = ["=msclkid", "=conversion__order_id"]  # served by get_search_results below
    search_help_text = "An exact msclkid or order id (case-sensitive)."
    show_full_result_count = False
    paginator = EstimatingPaginator  # no full COUNT(*) over millions of rows (docs/performance.md)
    list_per_page = 50
    date_hierarchy = None
    fields = ["status", "goal_name", "msclkid", "value", "currency", "conversion_time", "order_id", "event_name",
              "connection", "error_source", "error_code", "error_symbol", "error_message", "remedy", "tracking_id",
              "attempts",
              "next_attempt_at", "sent_at", "created_at", "updated_at"]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_search_results(self, request, queryset, search_term):
        """Exact msclkid or order id through indexes, not an UPPER() join over the whole log."""
        return search_by_identifier(queryset, search_term), False

    @admin.action(description="Validate only (dry run): build and check, send nothing")
    def validate_dry_run(self, request, queryset):
        for line in operations.summarize(operations.validate(queryset)):
            self.message_user(request, line)

    @admin.action(description="Replay: re-queue selected error rows still inside Microsoft's 90-day window",
                  permissions=["operate"])
    def replay_errors(self, request, queryset):
        count = operations.replay(queryset)
        self.message_user(request, f"{count} row(s) re-queued for the next flush; rows outside the window or not in "
                                   f"error were left alone.")

    @admin.display(description="Error from")
    def error_source(self, push: Push) -> str:
        if not push.error_message:
            return "—"
        return "adsync's pre-send check (not sent)" if push.is_adsync_error else "Microsoft Ads"

    @admin.display(description="msclkid", ordering="msclkid")
    def msclkid_or_none(self, push: Push) -> str:
        return push.msclkid or "—"

    @admin.display(description="Order id")
    def order_id(self, push: Push) -> str:
        return push.conversion.order_id or "—"

    @admin.display(description="Event")
    def event_name(self, push: Push) -> str:
        return push.conversion.event_name

    @admin.display(description="Error")
    def short_error(self, push: Push) -> str:
        if not push.error_message:
            return ""
        code = f"{push.error_code} " if push.error_code is not None else ""
        text = f"{code}{push.error_message}"
        return text if len(text) <= 90 else text[:87] + "…"

    @admin.display(description="What to do")
    def remedy(self, push: Push) -> str:
        if push.status == Push.PENDING_IDENTITY:
            return ("No msclkid: Microsoft cannot match this conversion. Check that auto-tagging is on in Microsoft "
                    "Ads, that the snippet is on every landing page, and remember that visitors who never clicked a "
                    "Microsoft ad cannot be attributed.")
        if not push.error_message:
            return "—"
        if push.is_adsync_error:
            return "Fix the cause (Goal Name, times, identifiers), then use the Replay action."
        return remedy_hint(push.error_code)


@admin.register(Conversion)
class ConversionAdmin(admin.ModelAdmin):
    list_display = ["occurred_at", "site", "event_name", "order_id", "value", "currency", "msclkid", "source"]
    list_filter = ["site", "event_name", "source"]
    list_select_related = ["site"]
    search_fields = ["=order_id", "=msclkid"]
    show_full_result_count = False
    readonly_fields = [f.name for f in Conversion._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Click)
class ClickAdmin(admin.ModelAdmin):
    list_display = ["clicked_at", "site", "msclkid", "visitor_id", "landing_url"]
    list_filter = ["site"]
    list_select_related = ["site"]
    search_fields = ["=msclkid", "=visitor_id"]
    show_full_result_count = False
    readonly_fields = [f.name for f in Click._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(StaffNotificationPreference)
class StaffNotificationPreferenceAdmin(admin.ModelAdmin):
    """Who gets the sync digest and the alerts (docs/notifications.md); staff with an email address only."""

    list_display = ["user", "email", "digest", "alerts"]
    list_editable = ["digest", "alerts"]
    list_select_related = ["user"]
    autocomplete_fields = ["user"]

    @admin.display(description="Email", ordering="user__email")
    def email(self, pref: StaffNotificationPreference) -> str:
        return pref.user.email or "— (no email address: nothing is sent)"
