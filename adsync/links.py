"""Links to adsync's admin pages, for the admin, the dashboard, emails and support text: one builder each."""

from __future__ import annotations

from django.urls import reverse
from django.utils.http import urlencode

from adsync.conf import conf


def absolute(path: str) -> str:
    """An admin path made absolute with ADSYNC_PUBLIC_URL (for emails)."""
    return conf.public_url + path


def sync_log_url(*, connection_id: int | None = None, status: str | None = None, search: str | None = None,
                 absolute_url: bool = False) -> str:
    """The sync log, filtered to one connection and/or status, or searched for an msclkid or order id."""
    filters = {}
    if connection_id is not None:
        filters["connection__id__exact"] = connection_id
    if status:
        filters["status__exact"] = status
    if search:
        filters["q"] = search
    url = reverse("admin:adsync_push_changelist") + ("?" + urlencode(filters) if filters else "")
    return absolute(url) if absolute_url else url


def card_url(connection_id: int, *, absolute_url: bool = False) -> str:
    """The Microsoft Ads card (the connection's admin page)."""
    url = reverse("admin:adsync_connection_change", args=[connection_id])
    return absolute(url) if absolute_url else url


def connection_page_url(connection_id: int, page: str, *, absolute_url: bool = False) -> str:
    """One of the card's own pages: "reconnect", "reconciliation", "create-goal", "check"
    (adsync/admin/connect.py, adsync/admin/diagnosis.py)."""
    url = reverse(f"admin:adsync_connection_{page.replace('-', '_')}", args=[connection_id])
    return absolute(url) if absolute_url else url


def site_url(site_id: int) -> str:
    """The site's admin page (it shows the snippet tag to embed)."""
    return reverse("admin:adsync_site_change", args=[site_id])
