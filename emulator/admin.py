"""Admin pages for the emulator's state: staff edit goals, clicks and the behaviour switches here."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone

from emulator.models import (
    EmulatorAccount,
    EmulatorAdjustment,
    EmulatorApp,
    EmulatorBehaviour,
    EmulatorCampaign,
    EmulatorClick,
    EmulatorConversion,
    EmulatorGoal,
    EmulatorReportRequest,
    EmulatorToken,
    EmulatorUser,
)


@admin.register(EmulatorUser)
class EmulatorUserAdmin(admin.ModelAdmin):
    list_display = ["user_name", "email", "role_id", "user_id"]
    search_fields = ["user_name", "email", "user_id"]


class GoalInline(admin.TabularInline):
    model = EmulatorGoal
    extra = 0
    fields = ["name", "type", "status", "conversion_window_in_minutes", "count_type",
              "is_enhanced_conversions_enabled", "created_at"]


@admin.register(EmulatorAccount)
class EmulatorAccountAdmin(admin.ModelAdmin):
    """`MSCLKIDAutoTaggingEnabled` is editable in the list: the switch that turns auto-tagging off."""

    list_display = ["name", "account_id", "parent_customer_id", "number", "currency_code", "life_cycle_status",
                    "msclkid_auto_tagging_enabled"]
    list_editable = ["msclkid_auto_tagging_enabled"]
    search_fields = ["name", "account_id", "number"]
    filter_horizontal = ["users"]
    inlines = [GoalInline]


@admin.register(EmulatorGoal)
class EmulatorGoalAdmin(admin.ModelAdmin):
    list_display = ["name", "account", "type", "status", "conversion_window_in_minutes", "count_type",
                    "is_enhanced_conversions_enabled", "created_at", "goal_id"]
    list_editable = ["status", "is_enhanced_conversions_enabled"]
    list_filter = ["status", "type", "account"]
    list_select_related = ["account"]
    search_fields = ["name", "goal_id"]


@admin.register(EmulatorCampaign)
class EmulatorCampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "account", "status", "campaign_id"]
    list_select_related = ["account"]


@admin.register(EmulatorClick)
class EmulatorClickAdmin(admin.ModelAdmin):
    list_display = ["msclkid", "account", "clicked_at"]
    list_filter = ["account"]
    list_select_related = ["account"]
    search_fields = ["msclkid"]
    date_hierarchy = "clicked_at"


@admin.register(EmulatorApp)
class EmulatorAppAdmin(admin.ModelAdmin):
    list_display = ["client_id", "name", "redirect_uris"]
    fields = ["client_id", "client_secret", "name", "redirect_uris"]


@admin.register(EmulatorToken)
class EmulatorTokenAdmin(admin.ModelAdmin):
    """Tokens are emulator-only, but the list still shows only a prefix of each value."""

    list_display = ["short_value", "kind", "user", "client_id", "created_at", "expires_at", "used_at", "revoked"]
    list_filter = ["kind", "revoked"]
    list_select_related = ["user"]
    readonly_fields = ["value", "kind", "user", "client_id", "scope", "created_at", "redirect_uri", "code_challenge",
                       "code_challenge_method", "used_at"]
    actions = ["revoke", "expire"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="value")
    def short_value(self, token: EmulatorToken) -> str:
        return f"{token.value[:24]}…"

    @admin.action(description="Revoke selected tokens (refresh → invalid_grant, access → 105)")
    def revoke(self, request: HttpRequest, queryset) -> None:
        self.message_user(request, f"Revoked {queryset.update(revoked=True)} token(s).", messages.SUCCESS)

    @admin.action(description="Expire selected tokens now (access → 109)")
    def expire(self, request: HttpRequest, queryset) -> None:
        count = queryset.update(expires_at=timezone.now())
        self.message_user(request, f"Expired {count} token(s).", messages.SUCCESS)


@admin.register(EmulatorConversion)
class EmulatorConversionAdmin(admin.ModelAdmin):
    """What the emulator received: read-only, like Microsoft's side of the wire."""

    list_display = ["received_at", "account", "goal_name", "msclkid", "conversion_time", "value", "currency",
                    "duplicate", "retracted", "restated_value", "tracking_id"]
    list_filter = ["duplicate", "retracted", "account", "goal_name"]
    list_select_related = ["account"]
    search_fields = ["msclkid", "tracking_id", "goal_name"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(EmulatorAdjustment)
class EmulatorAdjustmentAdmin(admin.ModelAdmin):
    """What ApplyOfflineConversionAdjustments accepted: read-only, like received conversions."""

    list_display = ["received_at", "account", "adjustment_type", "conversion", "adjustment_time", "value",
                    "currency", "tracking_id"]
    list_filter = ["adjustment_type", "account"]
    list_select_related = ["account", "conversion"]
    search_fields = ["conversion__msclkid", "tracking_id", "conversion__goal_name"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(EmulatorReportRequest)
class EmulatorReportRequestAdmin(admin.ModelAdmin):
    list_display = ["request_id", "user", "polls", "created_at"]
    list_select_related = ["user"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(EmulatorBehaviour)
class EmulatorBehaviourAdmin(admin.ModelAdmin):
    """A single row: the list page goes straight to it."""

    fieldsets = [
        ("ApplyOfflineConversions", {"fields": ["apply_failure", "apply_failure_count", "timeout_seconds",
                                                "retry_after_seconds", "enforce_goal_minimum_age"]}),
        ("OAuth token endpoint", {"fields": ["token_failure_count", "refresh_tokens_revoked",
                                             "strict_refresh_rotation"]}),
        ("Reporting", {"fields": ["report_pending_polls", "report_failure", "report_concurrency_failure_count"]}),
    ]

    def changelist_view(self, request: HttpRequest, extra_context=None):
        behaviour = EmulatorBehaviour.load()
        return HttpResponseRedirect(reverse("admin:emulator_emulatorbehaviour_change", args=[behaviour.pk]))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
