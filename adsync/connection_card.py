"""The Microsoft Ads card's connection-lifecycle parts, mixed into ConnectionAdmin (adsync/admin.py).

Status and problem, token health (never a token), Goal Names mapped, 24-hour counts linking into
the filtered sync log, the latest sync-log entry, the write-only client secret, the
Connect / Reconnect / Disconnect URLs (buttons: templates/admin/adsync/connection/change_form.html)
and the Reconnect action. The list page stays at a constant number of queries: counts and the
newest send come from subquery annotations, Goal Names from one prefetch.
"""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from adsync import lifecycle
from adsync.connect_views import connection_urls
from adsync.models import Connection, Push

COUNTED = [(Push.SENT, "card_sent"), (Push.PENDING_IDENTITY, "card_pending_identity"), (Push.ERROR, "card_error")]


class ConnectionForm(forms.ModelForm):
    """Tokens are never form fields; the client secret is write-only (blank keeps the stored one)."""

    client_secret = forms.CharField(
        required=False, strip=True, widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Write-only and encrypted at rest: never shown again. Leave blank to keep the stored secret.",
    )
    clear_client_secret = forms.BooleanField(required=False, label="Remove the stored client secret")

    class Meta:
        model = Connection
        exclude = ["access_token", "refresh_token", "refresh_lock_until"]
        help_texts = {"client_id": "Your Azure app's Application (client) ID. Leave empty to use "
                                   "MICROSOFT_ADS_CLIENT_ID. After changing it, click Reconnect."}

    def clean(self):
        data = super().clean()
        if data.get("clear_client_secret"):
            data["client_secret"] = ""
        elif not data.get("client_secret"):
            data["client_secret"] = self.instance.client_secret if self.instance.pk else ""
        return data


def _count(status: str, since):
    rows = (Push.objects.filter(connection=OuterRef("pk"), status=status, created_at__gte=since)
            .order_by().values("connection").annotate(n=Count("pk")).values("n")[:1])
    return Coalesce(Subquery(rows, output_field=IntegerField()), 0)


def _newest_sent_at():
    # The newest *created* sent row: one seek on the (connection, status, -created_at) index.
    rows = Push.objects.filter(connection=OuterRef("pk"), status=Push.SENT).order_by("-created_at")
    return Subquery(rows.values("sent_at")[:1])


def _count_24h(conn: Connection, status: str, annotation: str) -> int:
    """From the list's annotation when present (constant queries), else one count."""
    if hasattr(conn, annotation):
        return getattr(conn, annotation)
    return conn.pushes.filter(status=status, created_at__gte=timezone.now() - timedelta(hours=24)).count()


def _sync_log_url(**filters) -> str:
    return reverse("admin:adsync_push_changelist") + "?" + urlencode(filters)


class ConnectionCardMixin:
    """Put first in ConnectionAdmin's bases; names below are used in its list_display / fieldsets."""

    form = ConnectionForm

    def get_urls(self):
        return connection_urls(self) + super().get_urls()

    def get_fieldsets(self, request, obj=None):
        """View-only staff see every field read-only, which would print the decrypted client secret:
        show whether one is stored instead."""
        fieldsets = super().get_fieldsets(request, obj)
        if self.has_change_permission(request, obj):
            return fieldsets
        hidden = {"client_secret": "client_secret_stored", "clear_client_secret": None}
        return [(name, {**options, "fields": [hidden.get(f, f) for f in options["fields"] if hidden.get(f, f)]})
                for name, options in fieldsets]

    @admin.display(description="Client secret")
    def client_secret_stored(self, conn: Connection) -> str:
        return "stored (encrypted, never shown)" if conn.client_secret else "none"

    def get_queryset(self, request):
        since = timezone.now() - timedelta(hours=24)
        annotations = {name: _count(status, since) for status, name in COUNTED}
        return (super().get_queryset(request).annotate(card_newest_sent_at=_newest_sent_at(), **annotations)
                .prefetch_related("goal_mappings"))

    @admin.display(description="Needs attention")
    def problem(self, conn: Connection) -> str:
        found = lifecycle.problem_for(conn, getattr(conn, "card_newest_sent_at", None))
        if found is None:
            return "—"
        if not found.message:
            return format_html("<strong>{}</strong>: {}", found.title, found.hint)
        return format_html("<strong>{}</strong>: {}<br><em>{}</em>", found.title, found.message, found.hint)

    @admin.display(description="Account")
    def account_label(self, conn: Connection) -> str:
        if not conn.account_id:
            return "—"
        return format_html("{} · Account ID <strong>{}</strong>", conn.account_name or "(no name)", conn.account_id)

    @admin.display(description="Goal Names mapped")
    def goal_names_mapped(self, conn: Connection) -> str:
        mappings = list(conn.goal_mappings.all()) if conn.pk else []
        if not mappings:
            return "none"
        return format_html_join(", ", "{} → “{}”", ((m.event_name, m.goal_name) for m in mappings))

    @admin.display(description="Last 24 h")
    def last_24h(self, conn: Connection) -> str:
        if not conn.pk:
            return "—"
        links = ((_sync_log_url(connection__id__exact=conn.pk, status__exact=status), _count_24h(conn, status, name),
                  status) for status, name in COUNTED)
        return format_html_join(" · ", '<a href="{}">{} {}</a>', links)

    @admin.display(description="Latest sync-log entry")
    def latest_push(self, conn: Connection) -> str:
        push = conn.pushes.order_by("-created_at", "-id").first() if conn.pk else None
        if push is None:
            return "none yet"
        detail = f" — {push.error_code or ''} {push.error_message}".rstrip() if push.error_message else ""
        return format_html('<a href="{}">{} UTC · {} · “{}”{}</a>', reverse("admin:adsync_push_change", args=[push.pk]),
                           f"{push.created_at:%Y-%m-%d %H:%M}", push.status, push.goal_name, detail)

    @admin.display(description="Tokens")
    def token_health(self, conn: Connection) -> str:
        if not conn.refresh_token:
            return "No token stored."
        expiry = f"access token valid until {conn.token_expires_at:%Y-%m-%d %H:%M} UTC" if conn.token_expires_at \
            else "no access token yet"
        refreshed = f"last refreshed {conn.refreshed_at:%Y-%m-%d %H:%M} UTC" if conn.refreshed_at else "never refreshed"
        return f"Refresh token stored (encrypted); {expiry}; {refreshed}."

    @admin.action(description="Refresh token now (checks the connection)", permissions=["operate"])
    def refresh_token_now(self, request, queryset):
        ids = list(queryset.filter(status=Connection.ACTIVE).values_list("pk", flat=True))
        lifecycle.enqueue_refresh_now(ids)
        self.message_user(request, f"Token refresh queued for {len(ids)} active connection(s); the worker runs it "
                                   f"within seconds and the card shows the outcome (Active, or Token expired with "
                                   f"Microsoft's reason).")
        skipped = queryset.exclude(status=Connection.ACTIVE).count()
        if skipped:
            self.message_user(request, f"{skipped} connection(s) not Active were skipped: Connect or Reconnect them.",
                              messages.WARNING)

    @admin.action(description="Reconnect (sign in to Microsoft again)", permissions=["operate"])
    def reconnect(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Reconnect one connection at a time: select exactly one.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:adsync_connection_reconnect", args=[queryset.get().pk]))
