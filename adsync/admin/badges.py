"""Coloured status badges, the same on every admin page: a sync-log row's status and a card's state."""

from __future__ import annotations

from django.utils.html import format_html
from django.utils.safestring import SafeString

from adsync.models import Push

# One colour per sync-log status, on the sync log, the row page and the dashboard's chart.
PUSH_COLOURS = {Push.SENT: "#1a7f37", Push.PENDING_IDENTITY: "#9a6700", Push.ERROR: "#cf222e",
                Push.QUEUED: "#0969da", Push.SKIPPED_NO_CONSENT: "#6e7781", Push.CANCELLED: "#6e7781"}


def badge(label: str, colour: str, title: str = "") -> SafeString:
    """White text on the colour, rounded: readable and never mistaken for plain text."""
    return format_html(
        '<span class="adsync-badge" style="display:inline-block;padding:1px 7px;border-radius:9px;'
        'background:{};color:#fff;font-weight:600;font-size:11px;line-height:16px;white-space:nowrap" '
        'title="{}">{}</span>', colour, title, label)


def push_badge(status: str) -> SafeString:
    return badge(status, PUSH_COLOURS.get(status, "#6e7781"))
