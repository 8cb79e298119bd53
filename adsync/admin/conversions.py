"""Conversions and clicks as stored: read-only lists, searched by exact order id, msclkid or visitor id."""

from django.contrib import admin

from adsync.admin.erasures import forget_selected_conversions
from adsync.models import Click, Conversion
from adsync.security.roles import OperatorActionsMixin


@admin.register(Conversion)
class ConversionAdmin(OperatorActionsMixin, admin.ModelAdmin):
    list_display = ["occurred_at", "site", "event_name", "order_id", "value", "currency", "msclkid", "source",
                    "consent"]
    list_filter = ["site", "event_name", "source", "consent"]
    actions = ["forget_people"]
    list_select_related = ["site"]
    search_fields = ["=order_id", "=msclkid"]
    show_full_result_count = False
    readonly_fields = [f.name for f in Conversion._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Forget the people behind these conversions (shows what will go first)",
                  permissions=["operate"])
    def forget_people(self, request, queryset):
        return forget_selected_conversions(self, request, queryset)


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
