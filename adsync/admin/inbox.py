"""The inbox in the admin: what the snippet reported and the worker has not stored yet, and why not."""

from django.contrib import admin, messages

from adsync.intake import inbox
from adsync.models import Hit
from adsync.security.roles import OperatorActionsMixin

ADMIN_DRAIN_SECONDS = 10


@admin.register(Hit)
class HitAdmin(OperatorActionsMixin, admin.ModelAdmin):
    list_display = ["id", "kind", "site", "received_at", "error"]
    list_filter = ["kind", ("error", admin.EmptyFieldListFilter)]
    list_select_related = ["site"]
    readonly_fields = ["site", "kind", "payload", "received_at", "error"]
    actions = ["process_again"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Process again (clear the error and store now)", permissions=["operate"])
    def process_again(self, request, queryset):
        queryset.update(error="")
        # Hits are stored in arrival order, so these wait behind any backlog: store for a few
        # seconds here and leave the rest to the worker, not a page that never answers.
        result = inbox.drain(seconds=ADMIN_DRAIN_SECONDS)
        left = inbox.pending().exists()
        level = messages.WARNING if result.failed else messages.SUCCESS
        self.message_user(request, result.line() + ("; the worker stores the rest" if left else ""), level)
