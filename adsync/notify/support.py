""""Copy support details": the card's facts as plain text, ready to paste into an email.

It carries exactly what the seed's "When to email support" list asks for: the card's status,
the Microsoft Ads Account ID, the Goal Names configured and two or three recent error
messages verbatim (with Microsoft's TrackingId), plus the latest diagnosis checklist
(adsync/diagnosis/), which answers most of support's first questions before they are asked.
It is built from an explicit list of safe fields, never from the model as a whole, so no
token, secret or visitor data can slip in.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Count
from django.utils import timezone
from django.utils.html import format_html

from adsync.connections import health
from adsync.models import Connection, DiagnosisRun, Push

RECENT_ERRORS = 3
# Look this far back for distinct messages, so one repeated error does not fill the list.
ERROR_SCAN = 50


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "never"


def _status_lines(connection: Connection) -> list[str]:
    """The card's state as the card shows it, and the link of its one fix."""
    state = health.card_state(connection)
    lines = [f"Card status: {state.label} ({state.reason})" if state.reason else f"Card status: {state.label}"]
    link = health.fix_link(state, connection.pk, absolute_url=True) if state.needs_attention else None
    if link:
        lines.append(f"Fix: {link[0]}: {link[1]}")
    return lines


def recent_errors(connection: Connection, limit: int = RECENT_ERRORS) -> list[Push]:
    """The latest sync-log rows with an error message, one per distinct (code, message)."""
    seen, picked = set(), []
    rows = (connection.pushes.exclude(error_message="").order_by("-updated_at", "-id")
            .only("status", "error_code", "error_symbol", "error_message", "tracking_id", "updated_at")[:ERROR_SCAN])
    for push in rows:
        key = (push.error_code, push.error_message)
        if key not in seen:
            seen.add(key)
            picked.append(push)
        if len(picked) == limit:
            break
    return picked


def _counts_line(connection: Connection) -> str:
    since = timezone.now() - timedelta(hours=24)
    counts = dict(connection.pushes.filter(created_at__gte=since).values_list("status")
                  .annotate(n=Count("id")).order_by())
    return ", ".join(f"{counts.get(status, 0)} {status}" for status, _ in Push.STATUSES)


def _error_lines(push: Push, number: int) -> list[str]:
    code = " ".join(str(p) for p in (push.error_code, push.error_symbol) if p not in (None, "")) or "no code"
    tracking = push.tracking_id or "none"
    return [f"{number}. {_when(push.updated_at)} · {code} · TrackingId {tracking} · row {push.status}",
            f"   {push.error_message}"]


def support_details(connection: Connection) -> str:
    """Plain text for a support email about this card; contains no secret."""
    mappings = list(connection.goal_mappings.order_by("event_name").values_list("event_name", "goal_name"))
    lines = [
        f"adsync support details, {_when(timezone.now())}",
        f"Site: {connection.site.name}",
        f"Platform: {connection.get_platform_display()}",
        *_status_lines(connection),
        f"Microsoft Ads Account ID: {connection.account_id or 'not set'}",
        f"Customer ID: {connection.customer_id or 'not set'}",
        f"Account name: {connection.account_name or 'not set'}",
        "Conversion Goal Names configured (event → Goal Name, exactly as stored):",
        *([f'  {event} → "{goal}"' for event, goal in mappings] or ["  none"]),
        f"Last flush: {_when(connection.last_flush_at)}",
        f"Last insights sync: {_when(connection.last_insights_sync_at)}",
        f"Sync log, last 24 hours: {_counts_line(connection)}",
    ]
    if connection.last_error:
        when = f" ({_when(connection.last_error_at)})" if connection.last_error_at else ""
        lines += [f"Card's last error{when}:", f"   {connection.last_error}"]
    errors = recent_errors(connection)
    lines.append("Recent errors from the sync log (verbatim):" if errors else "Recent errors from the sync log: none")
    for number, push in enumerate(errors, start=1):
        lines += _error_lines(push, number)
    run = DiagnosisRun.objects.filter(connection=connection).order_by("-started_at", "-id").first()
    lines += run.checklist_lines() if run else ["Diagnosis: never run (action: Check this connection)"]
    return "\n".join(lines) + "\n"


COPY_SCRIPT = (
    "var t=document.getElementById('adsync-support-details'),b=this;t.select();"
    "var done=function(){b.textContent='Copied';};"
    "if(navigator.clipboard&&window.isSecureContext){navigator.clipboard.writeText(t.value).then(done,"
    "function(){document.execCommand('copy');done();});}else{document.execCommand('copy');done();}"
)


def support_box(connection: Connection) -> str:
    """The card's read-only text box with a copy button (inline script: no CDN, nothing fetched)."""
    if not connection.pk:
        return "Save the connection first."
    return format_html(
        '<textarea id="adsync-support-details" readonly rows="18" style="width:100%;max-width:60em;'
        'font-family:monospace">{}</textarea><br><button type="button" class="button" onclick="{}">'
        "Copy support details</button>",
        support_details(connection), COPY_SCRIPT,
    )
