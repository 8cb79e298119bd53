"""The diagnosis in the admin: the card's checklist, "Check this connection", the one-click goal creation,
the reconciliation page and the history of runs.

Nothing here calls Microsoft: checking and creating a goal are queued jobs (adsync/jobs.py); the
checklist and the reconciliation page render stored rows (DiagnosisRun, GoalReportDay, the sync log).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince

from adsync import jobs
from adsync.admin.connect import REQUIRED_PERMISSIONS, card_paths, operable_connection  # operators and superusers
from adsync.admin.read_only import ReadOnlyAdmin
from adsync.conf import conf
from adsync.diagnosis import fixes, reconciliation
from adsync.diagnosis.run import latest_run
from adsync.formats import count
from adsync.links import card_url, connection_page_url
from adsync.models import CheckResult, Connection, DiagnosisRun
from adsync.models.diagnosis import FAIL, PASS, SKIP, WARN
from adsync.security.roles import OperatorActionsMixin

COLOURS = {PASS: "#1a7f37", WARN: "#9a6700", FAIL: "#cf222e", SKIP: "#6e7781"}


# --- "Check this connection" (an action on the Connection admin) ---------------------------------

@admin.action(description="Check this connection (run the troubleshooting checklist)", permissions=["operate"])
def check_connection(modeladmin: admin.ModelAdmin, request, queryset) -> None:
    """Queue one diagnosis per selected connection; the card shows the checklist when the worker is done."""
    ids = list(queryset.values_list("pk", flat=True))
    for pk in ids:
        _queue_check(request, pk)
    modeladmin.message_user(request, f"Check queued for {count(len(ids), 'connection')}: the worker runs the checklist "
                                     f"within a minute or so, and the card shows it.", messages.SUCCESS)


def _queue_check(request: HttpRequest, pk: int) -> None:
    jobs.enqueue(jobs.diagnose, pk, DiagnosisRun.OPERATOR, force=True, requested_by=request.user.get_username(),
                 group="adsync:diagnosis", task_name=f"adsync:diagnosis-now:{pk}")


# --- The card's checklist -------------------------------------------------------------------------

def diagnosis_panel(connection: Connection) -> SafeString:
    """The card's "Diagnosis" block: the latest run's checklist and a button to run it again."""
    if not connection.pk:
        return mark_safe("—")
    run = latest_run(connection)
    button = format_html(
        '<p><button type="submit" class="button" formaction="{}" formmethod="post" formnovalidate>'
        "Check this connection now</button> <span class=\"help\">Queues the checklist (operators); it runs by itself "
        "after Connect and every day.</span></p>", connection_page_url(connection.pk, "check"))
    if run is None:
        return format_html("<p>Not checked yet.</p>{}", button)
    return format_html("{}{}", render_run(run), button)


def render_run(run: DiagnosisRun) -> SafeString:
    """A run as a checklist: each check's verdict, evidence and its one fix."""
    when = f"{run.started_at:%Y-%m-%d %H:%M} UTC ({timesince(run.started_at, depth=1)} ago)"
    by = f" by {run.requested_by}" if run.requested_by else ""
    history = reverse("admin:adsync_diagnosisrun_changelist") + "?" + urlencode(
        {"connection__id__exact": run.connection_id})
    head = format_html('<p>Checked {}, {}{}: <strong style="color:{}">{}</strong> · <a href="{}">earlier runs</a></p>',
                       when, run.get_trigger_display(), by, COLOURS[run.outcome], run.counts_line(), history)
    note = format_html('<p style="max-width:60em"><strong>Note:</strong> {}</p>', run.note) if run.note else ""
    items = format_html_join("", "{}", ((_render_check(run, check),) for check in run.results))
    return format_html('{}{}<ol style="list-style:none;padding:0;margin:0;max-width:70em">{}</ol>', head, note, items)


def _render_check(run: DiagnosisRun, check: CheckResult) -> SafeString:
    evidence = format_html_join("", "<li>{}</li>", ((line,) for line in check.evidence))
    fix = ""
    if check.is_problem and check.remedy:
        link = format_html(' <a href="{}">{}</a>', check.link, check.link_label or "open") if check.link else ""
        fix = format_html("<div><strong>Fix:</strong> {}{}</div>", check.remedy, link)
    return format_html(
        '<li style="margin:.6em 0"><strong style="color:{}">{} {}. {}: {}</strong> — {}'
        '<ul style="margin:.2em 0 .2em 1.4em;color:#59636e">{}</ul>{}{}</li>',
        COLOURS.get(check.outcome, "#000"), check.mark, check.number, check.title, check.label, check.summary,
        evidence, fix, _extra(run, check))


def _extra(run: DiagnosisRun, check: CheckResult) -> SafeString:
    """The one-click goal creation (check 4) and the reconciliation page (check 9)."""
    if check.key == "goal_names" and check.data.get("missing_goals"):
        url = connection_page_url(run.connection_id, "create-goal")
        return format_html_join(" ", '<a class="button" href="{}?{}">Create “{}” in Microsoft Ads…</a>',
                                ((url, urlencode({"name": name}), name) for name in check.data["missing_goals"]))
    if check.key == "reconciliation":
        return format_html('<div><a href="{}">Reconciliation per goal and day</a></div>',
                           connection_page_url(run.connection_id, "reconciliation"))
    return mark_safe("")


# --- The card's extra pages -----------------------------------------------------------------------

def diagnosis_urls(model_admin) -> list:
    """Check this connection, one-click goal creation and the reconciliation page."""
    return card_paths(model_admin, [("check", check_now), ("create-goal", create_goal),
                                    ("reconciliation", reconciliation_page)])


def check_now(request: HttpRequest, model_admin, pk: int) -> HttpResponse:
    """The card's "Check this connection now" button (POST): queue the checklist, back to the card."""
    if request.method != "POST":
        return HttpResponseRedirect(card_url(pk))
    connection = get_object_or_404(Connection, pk=pk)
    if not request.user.has_perms(REQUIRED_PERMISSIONS) or not model_admin.has_change_permission(request, connection):
        # The button is on every staff member's card; viewers are told, not shown a 403 page.
        messages.warning(request, "Only operators can run the checklist on demand; it runs by itself every day and "
                                  "after Connect.")
        return HttpResponseRedirect(card_url(pk))
    _queue_check(request, connection.pk)
    messages.success(request, "Check queued: the worker runs the checklist within a minute or so; reload the card "
                              "to see it.")
    return HttpResponseRedirect(card_url(pk))


class GoalCreationForm(forms.Form):
    """What AddConversionGoals gets: the mapped name exactly, the window and the counting."""

    name = forms.CharField(max_length=100, strip=False, widget=forms.HiddenInput)
    window_days = forms.IntegerField(
        label="Conversion window (days)", min_value=1, max_value=fixes.MAX_WINDOW_DAYS,
        initial=fixes.DEFAULT_WINDOW_DAYS,
        help_text=f"How long after the ad click a conversion still counts (1–{fixes.MAX_WINDOW_DAYS} days).")
    count_type = forms.ChoiceField(label="Counting", choices=fixes.COUNT_TYPES, initial=fixes.COUNT_ALL,
                                   widget=forms.RadioSelect)

    def __init__(self, *args, creatable: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.creatable = creatable

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if name not in self.creatable:
            raise forms.ValidationError(f"“{name}” is not a mapped Goal Name missing from the account (the goal list "
                                        f"may have changed: run the check again).")
        return name


def create_goal(request: HttpRequest, model_admin, pk: int) -> HttpResponse:
    """GET: the confirmation (name, window, counting). POST: queue AddConversionGoals, back to the card."""
    connection = operable_connection(request, model_admin, pk)
    creatable = fixes.creatable_goal_names(connection)
    if request.method == "POST":
        form = GoalCreationForm(request.POST, creatable=creatable)
        if form.is_valid():
            data = form.cleaned_data
            jobs.enqueue(jobs.create_goal, connection.pk, data["name"], data["window_days"] * 1440,
                         data["count_type"], requested_by=request.user.get_username(), group="adsync:goals-now")
            messages.success(request, f"Creating the goal “{data['name']}” in Microsoft Ads is queued; the checklist "
                                      f"is run again when it is done.")
            return HttpResponseRedirect(card_url(pk))
    else:
        form = GoalCreationForm(initial={"name": request.GET.get("name", "")}, creatable=creatable)
    name = form.data.get("name", "") if form.is_bound else form.initial.get("name", "")
    context = {
        **model_admin.admin_site.each_context(request), "opts": Connection._meta, "title": "Create the goal in "
        "Microsoft Ads", "connection": connection, "form": form, "name": name, "known": name in creatable,
        "card_url": card_url(pk), "events": list(connection.goal_mappings.filter(goal_name=name)
                                                 .values_list("event_name", flat=True)),
    }
    status = 400 if form.is_bound or (name and name not in creatable) else 200
    return TemplateResponse(request, "admin/adsync/connection/create_goal.html", context, status=status)


def reconciliation_page(request: HttpRequest, model_admin, pk: int) -> HttpResponse:
    """Per goal and day: sent and accepted by adsync next to Microsoft's count, from stored rows only."""
    connection = get_object_or_404(Connection.objects.select_related("site"), pk=pk)
    if not model_admin.has_view_permission(request, connection):
        raise PermissionDenied
    panels = reconciliation.panels(connection)
    context = {
        **model_admin.admin_site.each_context(request), "opts": Connection._meta,
        "title": "Reconciliation: adsync vs Microsoft, per goal and day", "connection": connection,
        "panels": panels, "lag_note": reconciliation.LAG_NOTE, "threshold": conf.reconcile_gap_percent,
        "min_conversions": reconciliation.MIN_CONVERSIONS, "card_url": card_url(pk),
        "fetched_at": max((p.fetched_at for p in panels if p.fetched_at), default=None),
    }
    return TemplateResponse(request, "admin/adsync/connection/reconciliation.html", context)


# --- The history of runs ---------------------------------------------------------------------------

@admin.register(DiagnosisRun)
class DiagnosisRunAdmin(OperatorActionsMixin, ReadOnlyAdmin):
    """Every diagnosis run, newest first: the history behind the card's checklist. Read-only."""

    list_display = ["started_at", "connection", "trigger", "outcome_badge", "counts", "requested_by"]
    list_filter = ["outcome", "trigger", "connection"]
    list_select_related = ["connection__site"]
    fields = ["connection", "started_at", "finished_at", "trigger", "requested_by", "outcome", "checklist"]
    readonly_fields = fields

    @admin.display(description="Outcome", ordering="outcome")
    def outcome_badge(self, run: DiagnosisRun) -> str:
        return format_html('<strong style="color:{}">{}</strong>', COLOURS[run.outcome], run.get_outcome_display())

    @admin.display(description="Checks")
    def counts(self, run: DiagnosisRun) -> str:
        return run.counts_line()

    @admin.display(description="Checklist")
    def checklist(self, run: DiagnosisRun) -> str:
        return render_run(run)
