"""The sync log: every push, what was sent, and Microsoft's answer verbatim (or adsync's own reason)."""

from django.contrib import admin

from adsync.admin.adjust import adjustment_action
from adsync.admin.large_tables import EstimatingPaginator, search_by_identifier
from adsync.microsoft.errors import remedy_hint
from adsync.models import Adjustment, Push
from adsync.push import operations, transitions
from adsync.security.roles import OperatorActionsMixin  # actions with permissions=["operate"]: operators only


@admin.register(Push)
class PushAdmin(OperatorActionsMixin, admin.ModelAdmin):
    """The sync log: every push, what was sent, and Microsoft's answer verbatim."""

    list_display = ["created_at", "status", "kind", "goal_name", "msclkid_or_none", "value", "currency",
                    "order_id", "connection", "short_error"]
    actions = ["validate_dry_run", "replay_errors", "restate_value", "retract"]
    list_filter = ["status", "kind", "connection"]
    list_select_related = ["conversion", "connection__site"]
    search_fields = ["=msclkid", "=conversion__order_id"]  # served by get_search_results below
    search_help_text = "An exact msclkid or order id (case-sensitive)."
    show_full_result_count = False
    paginator = EstimatingPaginator  # no full COUNT(*) over millions of rows (docs/performance.md)
    list_per_page = 50
    date_hierarchy = None
    fields = ["status", "kind", "adjustment_time", "goal_name", "msclkid", "value", "currency", "conversion_time",
              "order_id", "event_name",
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
        count = transitions.replay(queryset)
        self.message_user(request, f"{count} row(s) re-queued for the next flush; rows outside the window or not in "
                                   f"error were left alone.")

    @admin.action(description="Restate value: a new value for the selected conversions (refund in part, correction)",
                  permissions=["operate"])
    def restate_value(self, request, queryset):
        return adjustment_action(self, request, queryset, Adjustment.RESTATE)

    @admin.action(description="Retract: the selected conversions did not happen (refund, cancellation)",
                  permissions=["operate"])
    def retract(self, request, queryset):
        return adjustment_action(self, request, queryset, Adjustment.RETRACT)

    @admin.display(description="Error from")
    def error_source(self, push: Push) -> str:
        if not push.error_message:
            return "—"
        if push.status in Push.NOT_SENT_BY_DESIGN:
            return "adsync (never sent, by design)"
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
        if push.status == Push.SKIPPED_NO_CONSENT:
            return ("Nothing to fix: adsync never sends a conversion without the visitor's ad storage consent. If "
                    "every row says so, check that the consent banner calls adsync.consent() (docs/tracking.md).")
        if push.status == Push.CANCELLED:
            return "Nothing to do: this row was called off on purpose and is never sent."
        if not push.error_message:
            return "—"
        if push.is_adsync_error:
            return "Fix the cause (Goal Name, times, identifiers), then use the Replay action."
        return remedy_hint(push.error_code)
