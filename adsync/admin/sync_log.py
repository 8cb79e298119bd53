"""The sync log: every push, what was sent, and Microsoft's answer verbatim (or adsync's own reason).

The list fits 1280 px with no horizontal scroll (fixed column widths, long text cut with an
ellipsis and kept whole in the cell's title and on the row's page); the row's page names who
wrote an error: Microsoft (its Code, ErrorCode, Message and TrackingId) or adsync's own pre-send
check (never sent, so no attempt and no TrackingId).
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from adsync.admin.adjust import adjustment_action
from adsync.admin.badges import push_badge
from adsync.admin.large_tables import EstimatingPaginator, search_by_identifier
from adsync.admin.read_only import ReadOnlyAdmin
from adsync.formats import count, money
from adsync.microsoft.errors import remedy_hint
from adsync.models import Adjustment, Push
from adsync.push import operations, transitions
from adsync.security.roles import OperatorActionsMixin  # actions with permissions=["operate"]: operators only

ERROR_PREVIEW = 160  # characters sent to the list cell; CSS cuts it to the column's width


def _cut(text: str, title: str = "") -> str:
    """A cell that shows what fits and keeps the whole text in its tooltip."""
    return format_html('<span title="{}">{}</span>', title or text, text) if text else "—"


@admin.register(Push)
class PushAdmin(OperatorActionsMixin, ReadOnlyAdmin):
    """The sync log: what adsync sent to Microsoft (or holds back), one row per conversion and connection."""

    list_display = ["when", "status_badge", "goal", "click_id", "amount", "order_id", "connection_short",
                    "error_summary"]
    list_display_links = ["when"]
    actions = ["validate_dry_run", "replay_errors", "restate_value", "retract", "release_held_values",
               "drop_held_values"]
    list_filter = ["status", "kind", "connection"]
    list_select_related = ["conversion", "connection__site"]
    search_fields = ["=msclkid", "=conversion__order_id"]  # served by get_search_results below
    search_help_text = "An exact msclkid or order id (case-sensitive)."
    show_full_result_count = False
    paginator = EstimatingPaginator  # no full COUNT(*) over millions of rows (docs/performance.md)
    list_per_page = 50
    date_hierarchy = None
    change_list_template = "admin/adsync/push/change_list.html"

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"title": "Sync log", **(extra_context or {})})

    def get_search_results(self, request, queryset, search_term):
        """Exact msclkid or order id through indexes, not an UPPER() join over the whole log."""
        return search_by_identifier(queryset, search_term), False

    # --- The row's page ------------------------------------------------------------------------

    def get_fields(self, request, obj: Push | None = None):
        """What the row's page shows, by what happened to the row: Microsoft's answer and adsync's own
        check are labelled apart; a final row shows no next attempt."""
        fields = ["status_badge", "goal_name", "identity", "amount", "conversion_time", "order_id", "event_name",
                  "source", "connection"]
        if obj is None:
            return fields
        if obj.kind != Push.CONVERSION:
            fields[1:1] = ["kind", "adjustment_time"]
        if obj.error_message and obj.is_adsync_error:
            fields += ["error_source", "adsync_check", "adsync_reason", "remedy"]
        elif obj.error_message:
            fields += ["error_source", "error_code", "error_symbol", "error_message", "remedy"]
        elif obj.status == Push.PENDING_IDENTITY:
            fields += ["remedy"]
        fields += ["attempts_made", "tracking_id"] if obj.tracking_id else ["attempts_made"]
        if obj.status == Push.QUEUED:
            fields.append("next_attempt_at")
        if obj.sent_at:
            fields.append("sent_at")
        return fields + ["created_at", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    @admin.display(description="Status")
    def status_badge(self, push: Push) -> str:
        return push_badge(push.status)

    @admin.action(description="Restate value: a new value for the selected conversions (refund in part, correction)",
                  permissions=["operate"])
    def restate_value(self, request, queryset):
        return adjustment_action(self, request, queryset, Adjustment.RESTATE)

    @admin.action(description="Retract: the selected conversions did not happen (refund, cancellation)",
                  permissions=["operate"])
    def retract(self, request, queryset):
        return adjustment_action(self, request, queryset, Adjustment.RETRACT)

    @admin.action(description="Release held values: send the selected rows held for review (adsync:value_held)",
                  permissions=["operate"])
    def release_held_values(self, request, queryset):
        released = transitions.release_held_values(queryset)
        self.message_user(request, f"{count(released, 'held row')} released: queued for the next flush (or "
                                   f"waiting for a click id). Rows not held for review were left alone.")

    @admin.action(description="Drop held values: never send the selected rows held for review", permissions=["operate"])
    def drop_held_values(self, request, queryset):
        dropped = transitions.drop_held_values(queryset)
        self.message_user(request, f"{count(dropped, 'held row')} dropped: they will not be sent (Release still undoes it).")

    @admin.display(description="Error from")
    def error_source(self, push: Push) -> str:
        if not push.error_message:
            return "—"
        if push.status in Push.NOT_SENT_BY_DESIGN:
            return "adsync: never sent, by design (no attempt, no TrackingId)"
        if push.is_adsync_error:
            return "adsync's own pre-send check: this row was not sent to Microsoft (no attempt, no TrackingId)"
        return "Microsoft Ads (its answer, verbatim)"

    @admin.display(description="adsync's check")
    def adsync_check(self, push: Push) -> str:
        return push.error_symbol

    @admin.display(description="adsync's reason")
    def adsync_reason(self, push: Push) -> str:
        return push.error_message

    @admin.display(description="Click id / identity")
    def identity(self, push: Push) -> str:
        if push.msclkid:
            return push.msclkid
        hashed = [name for name, value in (("email", push.hashed_email), ("phone", push.hashed_phone)) if value]
        return f"no msclkid; hashed {' and '.join(hashed)}" if hashed else "none"

    @admin.display(description="Attempts")
    def attempts_made(self, push: Push) -> str:
        if not push.attempts:
            return "0 (never sent to Microsoft)"
        return f"{count(push.attempts, 'call')} to Microsoft carried this row"

    @admin.display(description="Event")
    def event_name(self, push: Push) -> str:
        return push.conversion.event_name

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
        if push.error_symbol in (transitions.VALUE_HELD, transitions.VALUE_DROPPED):
            return ("Check the order in your shop: if it is real, use the Release held values action; if not, Drop "
                    "held values. A browser cannot prove a value: signed browser conversions are never held.")
        if push.is_adsync_error and push.status == Push.QUEUED:
            return "Nothing: adsync holds this row and sends it by itself when it may."
        if push.is_adsync_error:
            return "Fix the cause (Goal Name, times, identifiers), then use the Replay action."
        return remedy_hint(push.error_code)

    # --- The list --------------------------------------------------------------------------------

    @admin.display(description="Created", ordering="created_at")
    def when(self, push: Push) -> str:
        return format_html('<span title="{} UTC">{}</span>', f"{push.created_at:%Y-%m-%d %H:%M:%S}",
                           f"{push.created_at:%m-%d %H:%M}")

    @admin.display(description="Goal Name", ordering="goal_name")
    def goal(self, push: Push) -> str:
        if push.kind != Push.CONVERSION:  # an adjustment's own row: say which
            return format_html("{} <em>({})</em>", _cut(push.goal_name), push.get_kind_display())
        return _cut(push.goal_name)

    @admin.display(description="msclkid")
    def click_id(self, push: Push) -> str:
        if push.msclkid:
            return _cut(push.msclkid)
        return "hashed only" if push.hashed_email or push.hashed_phone else "—"

    @admin.display(description="Value")
    def amount(self, push: Push) -> str:
        return money(push.value, push.currency) if push.value is not None else "—"

    @admin.display(description="Order id")
    def order_id(self, push: Push) -> str:
        return _cut(push.conversion.order_id or "")

    @admin.display(description="Site")
    def connection_short(self, push: Push) -> str:
        conn = push.connection
        return _cut(conn.site.name, title=str(conn))

    @admin.display(description="Error (Microsoft's message, or adsync's reason)")
    def error_summary(self, push: Push) -> str:
        if not push.error_message:
            return ""
        text = push.error_message
        if push.is_adsync_error:
            who = "adsync held" if push.status == Push.QUEUED else "adsync"
            title = f"{who} ({push.error_symbol}): {text}"
        else:
            # The code in bold and Microsoft's words at once; the ErrorCode symbol (long) in the tooltip.
            who = str(push.error_code) if push.error_code is not None else "Microsoft"
            symbol = " ".join(str(p) for p in (push.error_code, push.error_symbol) if p not in (None, ""))
            title = f"{symbol}: {text}" if symbol else text
        shown = text if len(text) <= ERROR_PREVIEW else text[:ERROR_PREVIEW - 1] + "…"
        return format_html('<span title="{}"><strong>{}</strong> {}</span>', title, who, shown)

    # --- Actions -----------------------------------------------------------------------------------

    @admin.action(description="Validate only (dry run): what a flush would send, and why the rest would not go")
    def validate_dry_run(self, request, queryset):
        for line in operations.summarize(operations.validate(queryset)):
            self.message_user(request, line)

    @admin.action(description="Replay: re-queue selected error rows still inside Microsoft's 90-day window",
                  permissions=["operate"])
    def replay_errors(self, request, queryset):
        replayed = transitions.replay(queryset)
        self.message_user(request, f"{count(replayed, 'row')} re-queued for the next flush; rows outside the window "
                                   f"or not in error were left alone.")
