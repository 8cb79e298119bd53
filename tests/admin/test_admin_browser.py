"""The admin's main pages in a real browser at 1280 px (Debian's Chromium, headless, through Playwright): the sync
log shows an error row's status and error without scrolling sideways, and a failing connection is never green.

Every test saves a full-page PNG to artifacts/screenshots/ (git-ignored; ADSYNC_SCREENSHOTS picks another
folder) for a reviewer to look at. Skipped when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

from adsync.connections import health  # noqa: E402
from adsync.models import AccountGoal, Connection, Push  # noqa: E402
from adsync.push.flush import flush_connection  # noqa: E402
from tests.conftest import APPLY_URL  # noqa: E402
from tests.tracking.test_browser import browser, database_calls_beside_playwright  # noqa: E402, F401 (shared fixtures)

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("ADSYNC_SCREENSHOTS") or ROOT / "artifacts" / "screenshots")
WIDTH, HEIGHT = 1280, 800
GREEN = "rgb(26, 127, 55)"  # health.GREEN, as the browser computes it
LONG_MESSAGE = ("The Microsoft Click Id of the offline conversion is invalid. It may be older than 90 days, belong to "
                "another account or have been changed by a redirect; check the landing page's tracking template.")


@pytest.fixture
def page(browser, live_server, django_user_model):  # noqa: F811 (the imported fixture)
    """A staff member signed in, in a 1280 × 800 window."""
    django_user_model.objects.create_superuser("ops", "ops@example.com", "a long staff password 42")
    client = Client()
    client.login(username="ops", password="a long staff password 42")
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME,
                          "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
                          "url": live_server.url}])
    tab = context.new_page()
    tab.base = live_server.url
    yield tab
    context.close()


def open_page(tab, path: str, shot: str):
    tab.goto(tab.base + path)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SCREENSHOTS / f"{shot}.png"), full_page=True)
    return tab


def fits_the_width(tab) -> bool:
    return tab.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


def in_viewport(box: dict) -> bool:
    return box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= WIDTH and box["y"] + box["height"] <= HEIGHT


@pytest.fixture
def failing_shop(mocked, site, make_connection, make_conversion):
    """A connection whose goals are known; a flush that left a sent row, a row Microsoft refused with a long
    message, and a row adsync's own check stopped; then an upload refused with 106 (a Viewer)."""
    connection = make_connection(site, account_name="Demo Store", goals_refreshed_at=timezone.now(),
                                 last_insights_sync_at=timezone.now())
    AccountGoal.objects.create(connection=connection, goal_id="1", name="Purchase",
                               first_seen_at=timezone.now() - timedelta(days=3))
    make_conversion(site, value=Decimal("49.9"))
    make_conversion(site, occurred_at=timezone.now() - timedelta(days=91), order_id="OLD-1")
    make_conversion(site, msclkid="test_msclkid_123", value=Decimal("120"), order_id="A-1002")
    mocked.post(APPLY_URL, json={"PartialErrors": [
        {"Index": 1, "Code": 5604, "ErrorCode": "OfflineConversionMicrosoftClickIdInvalid", "Message": LONG_MESSAGE}]},
        headers={"TrackingId": "9eaafe65-1c2b-4f5e-8a3b-2f1d0c9e8b7a"})
    flush_connection(connection)
    make_conversion(site, value=Decimal("15.5"))
    mocked.replace(mocked.POST, APPLY_URL, status=403, json={"Type": "AdApiFaultDetail", "TrackingId": "t-106",
                   "Errors": [{"Code": 106, "ErrorCode": "UserIsNotAuthorized",
                               "Message": "The user is not authorized to perform this action."}]})
    flush_connection(Connection.objects.get(pk=connection.pk))
    return Connection.objects.get(pk=connection.pk)


def test_the_sync_log_shows_an_error_rows_status_and_error_at_1280_px_without_scrolling_sideways(page, failing_shop):
    error = Push.objects.get(error_code=5604)
    tab = open_page(page, reverse("admin:adsync_push_changelist"), "sync-log")

    row = tab.locator("#result_list tbody tr", has_text="A-1002")
    status, message = row.locator("td.field-status_badge .adsync-badge"), row.locator("td.field-error_summary")

    assert fits_the_width(tab)
    assert in_viewport(status.bounding_box()) and in_viewport(message.bounding_box())
    assert status.inner_text() == "error"
    assert status.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(207, 34, 46)"
    assert message.bounding_box()["width"] >= 200  # a readable part of the message, not a sliver
    assert message.inner_text().startswith("5604 The Microsoft Click Id of the offline conversion is invalid.")
    assert message.locator("span").get_attribute("title").endswith(LONG_MESSAGE)
    assert row.locator("td.field-amount").inner_text() == "120.00 USD"
    adsync_row = tab.locator("#result_list tbody tr", has_text="OLD-1")
    assert adsync_row.locator("td.field-error_summary").inner_text().startswith("adsync The conversion is more than")
    assert tab.locator("#result_list tbody tr").count() == Push.objects.count()
    assert error.pk


def test_the_sync_log_row_page_shows_microsofts_whole_message_and_labels(page, failing_shop):
    error = Push.objects.get(error_code=5604)
    tab = open_page(page, reverse("admin:adsync_push_change", args=[error.pk]), "sync-log-row")

    text = tab.locator("#content").inner_text()
    assert fits_the_width(tab)
    assert LONG_MESSAGE in text and "Microsoft's TrackingId" in text and "9eaafe65" in text
    assert "Next attempt at" not in text


def test_a_failing_connection_is_not_green_on_the_list_the_card_and_the_dashboard(page, failing_shop):
    state = health.card_state(failing_shop)
    assert state.colour != health.GREEN

    for path, shot, badge in [
        (reverse("admin:adsync_connection_changelist"), "connections-list", "td.field-status_badge .adsync-badge"),
        (reverse("admin:adsync_connection_change", args=[failing_shop.pk]), "card", ".field-status_badge .adsync-badge"),
        (reverse("adsync_dashboard"), "dashboard", ".adsync-state .adsync-badge"),
    ]:
        tab = open_page(page, path, shot)
        shown = tab.locator(badge).first
        assert shown.inner_text() == state.label, path
        assert shown.evaluate("e => getComputedStyle(e).backgroundColor") != GREEN, path
        assert in_viewport(shown.bounding_box()), path
        fix = tab.locator(f'a[href="{reverse("admin:adsync_connection_reconnect", args=[failing_shop.pk])}"]')
        assert fix.count() >= 1, path
        assert fits_the_width(tab), path
