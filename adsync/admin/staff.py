"""Who gets the sync digest and the alerts (docs/notifications.md)."""

from django.contrib import admin

from adsync.models import StaffNotificationPreference


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
