"""The Microsoft Ads card (the connection's admin page) and the connections list.

Status and what needs attention (computed by adsync/connections/health.py), the account, token
health (never a token), Goal Names mapped and checked against the account's goals, 24-hour
counts linking into the filtered sync log, the latest sync-log entry, the insights chart, the
support details, the write-only client secret, the Connect / Reconnect / Disconnect URLs
(adsync/admin/connect.py; buttons in templates/admin/adsync/connection/change_form.html) and
the card's actions. The list stays at a constant number of queries: counts and the newest send
come from subquery annotations, Goal Names from one prefetch.
"""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from adsync import jobs
from adsync.admin.badges import badge
from adsync.admin.connect import connection_urls
from adsync.admin.diagnosis import check_connection, diagnosis_panel, diagnosis_urls
from adsync.admin.insights import insights_panel, resync_now
from adsync.connections import health
from adsync.formats import count
from adsync.links import sync_log_url
from adsync.models import AccountGoal, Connection, GoalMapping, Push
from adsync.notify.support import support_box
from adsync.push import operations, transitions
from adsync.push.goals import GoalBook
from adsync.security.roles import OperatorActionsMixin  # actions with permissions=["operate"]: operators only

# Fixed once connected: they change only through the account picker's confirmed switch (adsync/admin/connect.py).
ACCOUNT_FIELDS = ["site", "account_name", "account_id", "customer_id", "account_number"]
COUNTED = [(Push.SENT, "card_sent"), (Push.PENDING_IDENTITY, "card_pending_identity"), (Push.ERROR, "card_error"),
           (Push.QUEUED, "card_queued")]


def fix_button(state: health.CardState, connection_id: int) -> str:
    """The state's one fix as a button-styled link (the same link the dashboard, digest and support text carry)."""
    link = health.fix_link(state, connection_id)
    if link is None:
        return ""
    return format_html('<a class="button adsync-fix" href="{}" style="white-space:nowrap">{}</a>', link[1], link[0])


class ConnectionForm(forms.ModelForm):
    """Tokens are never form fields; the client secret is write-only (blank keeps the stored one)."""

    client_secret = forms.CharField(
        required=False, strip=True, widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Write-only and encrypted at rest: never shown again. Leave blank to keep the stored secret.",
    )
    clear_client_secret = forms.BooleanField(required=False, label="Remove the stored client secret")

    class Meta:
        model = Connection
        # Never the tokens, the refresh lease or the flush's bookkeeping.
        fields = ["site", "platform", "account_name", "account_id", "customer_id", "account_number",
                  "enhanced_conversions", "client_id", "client_secret"]
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


def _count_24h(conn: Connection, status: str, annotation: str) -> int:
    """From the list's annotation when present (constant queries), else one count."""
    if hasattr(conn, annotation):
        return getattr(conn, annotation)
    return conn.pushes.filter(status=status, created_at__gte=timezone.now() - timedelta(hours=24)).count()


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
            return format_html('<span style="color:{}">✔ exists and is active</span>', health.GREEN)
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
class ConnectionAdmin(OperatorActionsMixin, admin.ModelAdmin):
    """The Microsoft Ads card."""

    form = ConnectionForm

    list_display = ["__str__", "status_badge", "problem", "account_id", "account_name", "goal_names_mapped",
                    "last_24h", "last_flush_at", "last_insights_sync_at"]
    list_filter = ["status"]
    list_select_related = ["site"]
    search_fields = ["site__name", "account_id", "account_name"]
    inlines = [GoalMappingInline, AccountGoalInline]
    actions = ["refresh_goal_list", "send_test_conversion", resync_now, "reconnect", "refresh_token_now",
               check_connection]
    fieldsets = [
        (None, {"fields": ["site", "platform", "status_badge", "attention", "account_label", "account_name",
                           "account_id", "customer_id", "account_number", "goal_names_mapped",
                           "enhanced_conversions"]}),
        ("Health", {"fields": ["last_flush_at", "last_insights_sync_at", "token_health", "throttled_until",
                               "last_failure", "last_24h", "latest_push"]}),
        ("Microsoft app (optional)", {"fields": ["client_id", "client_secret", "clear_client_secret"],
                                      "classes": ["collapse"]}),
        ("Goals", {"fields": ["goals_refreshed_at", "goal_names_datalist"]}),
        ("Insights", {"fields": ["insights_chart"]}),
        ("Diagnosis", {"fields": ["diagnosis_checklist"]}),
        ("Support", {"fields": ["support_details"]}),
    ]
    readonly_fields = ["status_badge", "problem", "attention", "account_label", "goal_names_mapped", "token_health",
                       "latest_push", "last_flush_at", "last_insights_sync_at", "token_expires_at",
                       "throttled_until", "last_failure", "last_24h", "goals_refreshed_at",
                       "goal_names_datalist", "insights_chart", "support_details", "diagnosis_checklist"]

    @admin.display(description="Copy support details")
    def support_details(self, conn: Connection) -> str:
        return support_box(conn)

    @admin.display(description="Troubleshooting checklist")
    def diagnosis_checklist(self, conn: Connection) -> str:
        return diagnosis_panel(conn)

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
        ids = list(queryset.values_list("pk", flat=True))
        for pk in ids:
            jobs.enqueue(jobs.refresh_goals_now, pk, group="adsync:goals-now")
        self.message_user(request, f"Goal list refresh queued for {count(len(ids), 'connection')}.")

    @admin.action(description="Send test conversion (msclkid test_msclkid_123)", permissions=["operate"])
    def send_test_conversion(self, request, queryset):
        mappings = GoalMapping.objects.filter(connection__in=queryset).select_related("connection__site")
        chosen = request.POST.get("mapping")
        if chosen:
            mapping = mappings.filter(pk=chosen).first()
            if mapping is None:
                self.message_user(request, "Pick one of the listed goal mappings.", messages.ERROR)
                return None
            push = operations.send_test_conversion(mapping)
            jobs.enqueue_flush([mapping.connection_id])
            self.message_user(request, format_html(
                'Test conversion queued for “{}” with msclkid test_msclkid_123; Microsoft is expected to reject the '
                'click id. <a href="{}">Watch it in the sync log</a>.', mapping.goal_name,
                sync_log_url(search=push.conversion.order_id)))
            return None
        return TemplateResponse(request, "admin/adsync/send_test_conversion.html", {
            **self.admin_site.each_context(request), "title": "Send a test conversion", "mappings": mappings,
            "queryset": queryset, "action": "send_test_conversion",
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        })

    def get_urls(self):
        return connection_urls(self) + diagnosis_urls(self) + super().get_urls()

    def get_readonly_fields(self, request, obj=None):
        """A connected connection's account is what the picker chose after Microsoft's sign-in: typing another
        Account ID would send conversions to an account no one consented for. It changes only through
        Reconnect and the picker's confirmed switch."""
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.pk and (obj.account_id or obj.refresh_token):
            fields += [f for f in ACCOUNT_FIELDS if f not in fields]
        return fields

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
        return (super().get_queryset(request).annotate(newest_sent_at=health.newest_sent_at_subquery(), **annotations)
                .prefetch_related("goal_mappings"))

    def card_state(self, conn: Connection) -> health.CardState:
        """The card's state, once per row (the list and the card show it twice)."""
        if not hasattr(conn, "_card_state"):
            conn._card_state = health.card_states([conn])[0][1]
        return conn._card_state

    @admin.display(description="Status", ordering="status")
    def status_badge(self, conn: Connection) -> str:
        if not conn.pk:
            return "—"
        state = self.card_state(conn)
        return badge(state.label, state.colour, state.reason)

    @admin.display(description="Last failure")
    def last_failure(self, conn: Connection) -> str:
        return health.last_failure(conn) or "none"

    @admin.display(description="Needs attention")
    def problem(self, conn: Connection) -> str:
        """The list's cell: one sentence why and the one fix; Microsoft's words in the tooltip and on the card."""
        state = self.card_state(conn)
        if not state.needs_attention:
            return "—"
        return format_html('<span title="{}">{}</span> {}', state.message or state.hint, state.reason,
                           fix_button(state, conn.pk))

    @admin.display(description="Needs attention")
    def attention(self, conn: Connection) -> str:
        """The card's block: why, Microsoft's words verbatim, what to do, and the one fix."""
        if not conn.pk:
            return "—"
        state = self.card_state(conn)
        if not state.needs_attention:
            return format_html('<span style="color:{}">Nothing: {}</span>', health.GREEN, state.reason)
        verbatim = format_html('<br><span style="font-family:monospace">Microsoft: {}</span>', state.message) \
            if state.message else ""
        return format_html('<strong style="color:{}">{}</strong>{}<br><em>{}</em><br>{}', state.colour, state.reason,
                           verbatim, state.hint, fix_button(state, conn.pk))

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
        links = ((sync_log_url(connection_id=conn.pk, status=status), _count_24h(conn, status, name), status)
                 for status, name in COUNTED)
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
        for pk in ids:
            jobs.enqueue(jobs.refresh_token_now, pk, task_name=f"adsync:refresh-now:{pk}")
        self.message_user(request, f"Token refresh queued for {count(len(ids), 'active connection')}; the worker runs it "
                                   f"within seconds and the card shows the outcome (Active, or Token expired with "
                                   f"Microsoft's reason).")
        skipped = queryset.exclude(status=Connection.ACTIVE).count()
        if skipped:
            self.message_user(request, f"{count(skipped, 'connection')} not Active skipped: Connect or Reconnect "
                                       f"{'it' if skipped == 1 else 'them'}.",
                              messages.WARNING)

    @admin.action(description="Reconnect (sign in to Microsoft again)", permissions=["operate"])
    def reconnect(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Reconnect one connection at a time: select exactly one.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:adsync_connection_reconnect", args=[queryset.get().pk]))

    def save_formset(self, request, form, formset, change):
        """A corrected Goal Name re-queues the rows the old name failed; say how many."""
        super().save_formset(request, form, formset, change)
        if formset.model is not GoalMapping:
            return
        for mapping_form in formset.forms:
            mapping = mapping_form.instance
            if change and mapping.pk and "goal_name" in mapping_form.changed_data and mapping_form not in \
                    formset.extra_forms:
                requeued = transitions.rename_goal(mapping)
                self.message_user(request, f"Goal Name of “{mapping.event_name}” is now “{mapping.goal_name}”: "
                                           f"{count(requeued, 'sync-log row')} re-queued for the next flush.")
