"""The sync log and the pages beside it, as staff read them: badges, money in its currency, plurals, who wrote an
error, what each number counts, and staff test conversions left out of the match rate."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from adsync.formats import count, money
from adsync.models import CampaignInsight, Conversion, Push, StaffNotificationPreference
from adsync.notify.digest import build_digest
from adsync.push import operations
from adsync.push.flush import flush_connection
from tests.conftest import APPLY_URL

pytestmark = pytest.mark.django_db

SYNC_LOG = "/admin/adsync/push/"
INVALID_CLICK = "The Microsoft Click Id of the offline conversion is invalid."


def row_page(client, push: Push) -> str:
    return client.get(reverse("admin:adsync_push_change", args=[push.pk])).content.decode()


@pytest.mark.parametrize("value, currency, shown", [
    (Decimal("49.900"), "USD", "49.90 USD"), (Decimal("1500"), "JPY", "1,500 JPY"),
    (Decimal("1.250"), "KWD", "1.250 KWD"), (Decimal("49.905"), "EUR", "49.905 EUR"), (None, "USD", "—"),
])
def test_money_is_shown_with_its_currencys_decimals(value, currency, shown):
    assert money(value, currency) == shown


def test_counts_use_the_right_plural():
    assert [count(1, "row"), count(3, "row"), count(3, "sync-log entry", "sync-log entries")] == [
        "1 row", "3 rows", "3 sync-log entries"]


def test_the_sync_log_shows_a_coloured_status_money_and_the_error_with_who_wrote_it(admin_client, mocked, site,
                                                                                     connection, make_conversion):
    make_conversion(site, msclkid="test_msclkid_123", value=Decimal("49.9"))
    make_conversion(site, occurred_at=timezone.now() - timedelta(days=91))
    make_conversion(site)
    mocked.post(APPLY_URL, json={"PartialErrors": [
        {"Index": 0, "Code": 5604, "ErrorCode": "OfflineConversionMicrosoftClickIdInvalid", "Message": INVALID_CLICK}]},
        headers={"TrackingId": "tid-1"})
    flush_connection(connection)

    page = admin_client.get(SYNC_LOG).content.decode()

    assert "3 sync-log entries" in page and "sync log</" not in page.split("<h1>")[0]
    assert "49.90 USD" in page and "49.900" not in page
    assert "background:#cf222e" in page and "background:#1a7f37" in page  # error and sent badges
    assert f'title="5604 OfflineConversionMicrosoftClickIdInvalid: {INVALID_CLICK}"' in page
    assert "<strong>5604</strong> The Microsoft Click Id" in page
    assert "<strong>adsync</strong> The conversion is more than 90 days old" in page
    assert "What adsync sent to Microsoft Ads" in page and "Campaign insights" in page


def test_a_row_stopped_by_adsyncs_check_is_labelled_as_adsyncs_with_no_attempt_and_no_next_attempt(
        admin_client, mocked, site, connection, make_conversion):
    make_conversion(site, occurred_at=timezone.now() - timedelta(days=91))
    flush_connection(connection)

    page = row_page(admin_client, Push.objects.get())

    assert "adsync&#x27;s own pre-send check: this row was not sent to Microsoft" in page
    assert "Adsync&#x27;s check:" in page and "adsync:older_than_90_days" in page
    assert "Adsync&#x27;s reason:" in page
    assert "Microsoft&#x27;s Message" not in page and "Microsoft&#x27;s TrackingId" not in page
    assert "0 (never sent to Microsoft)" in page
    assert "Next attempt at" not in page


def test_a_row_microsoft_refused_shows_its_code_message_and_tracking_id_and_no_next_attempt(
        admin_client, mocked, site, connection, make_conversion):
    make_conversion(site, msclkid="test_msclkid_123")
    mocked.post(APPLY_URL, json={"PartialErrors": [
        {"Index": 0, "Code": 5604, "ErrorCode": "OfflineConversionMicrosoftClickIdInvalid", "Message": INVALID_CLICK}]},
        headers={"TrackingId": "tid-42"})
    flush_connection(connection)

    page = row_page(admin_client, Push.objects.get())

    for label in ("Microsoft&#x27;s Code", "Microsoft&#x27;s ErrorCode", "Microsoft&#x27;s Message",
                  "Microsoft&#x27;s TrackingId"):
        assert label in page
    assert INVALID_CLICK in page and "tid-42" in page and "1 call to Microsoft carried this row" in page
    assert "Adsync&#x27;s reason" not in page and "Next attempt at" not in page


def test_a_queued_row_shows_when_it_is_tried_next(admin_client, site, connection, make_conversion):
    make_conversion(site)
    assert "Next attempt at" in row_page(admin_client, Push.objects.get())


# --- What each number counts ---------------------------------------------------------------------------

def test_the_insights_list_and_the_card_say_their_numbers_are_microsofts_for_all_sources(admin_client, connection):
    CampaignInsight.objects.create(connection=connection, date=date.today(), campaign_id="c1", conversions=79)

    listing = admin_client.get(reverse("admin:adsync_campaigninsight_changelist")).content.decode()
    card = admin_client.get(reverse("admin:adsync_connection_change", args=[connection.pk])).content.decode()

    for page in (listing, card):
        assert "count every source Microsoft attributes" in page and "only what adsync sent" in page


def test_staff_test_conversions_are_left_out_of_the_dashboards_match_rate(admin_client, connection, make_conversion,
                                                                         site, django_capture_on_commit_callbacks):
    make_conversion(site)
    Push.objects.update(status=Push.SENT, sent_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=False):
        operations.send_test_conversion(connection.goal_mappings.get())
    Push.objects.filter(conversion__source=Conversion.SOURCE_ADMIN).update(status=Push.ERROR)

    page = admin_client.get(reverse("adsync_dashboard")).content.decode()

    assert "Match rate<strong>100%</strong>1 of 1 sent" in page
    assert "(1 staff test left out)" in page
    assert "push(es)" not in page and "0 sync-log entries" in page


def test_staff_test_conversions_are_left_out_of_the_digests_pending_share(admin_user, site, connection,
                                                                          make_conversion,
                                                                          django_capture_on_commit_callbacks):
    StaffNotificationPreference.objects.create(user=admin_user)
    with django_capture_on_commit_callbacks(execute=False):
        operations.send_test_conversion(connection.goal_mappings.get())
    Push.objects.update(status=Push.PENDING_IDENTITY, msclkid="")
    for n in range(11):  # more staff tests
        test = Conversion.objects.create(site=site, event_name="purchase", order_id=f"adsync-test-{n}",
                                         occurred_at=timezone.now(), source=Conversion.SOURCE_ADMIN)
        Push.objects.create(conversion=test, connection=connection, goal_name="Purchase",
                            status=Push.PENDING_IDENTITY, conversion_time=test.occurred_at)

    report = build_digest(timezone.now() - timedelta(hours=1)).reports
    assert all(r.pushes == 0 and not r.pending_high for r in report)
    assert not mail.outbox
