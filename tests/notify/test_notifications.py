"""Telling staff about trouble: the sync digest, the immediate alerts, the support details and
the sync dashboard. Emails are read from Django's test outbox (mail.outbox), Microsoft is
answered at the HTTP boundary (`responses`) or by the built-in emulator over real HTTP."""

from __future__ import annotations

import html
import io
import smtplib
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.core.management import call_command
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import Schedule

from adsync.connections import health
from adsync.jobs import ensure_schedules, run_flush
from adsync.microsoft.errors import Kind, MicrosoftAdsError, remedy_hint
from adsync.models import Connection, Push, StaffNotificationPreference
from adsync.notify.digest import PENDING_IDENTITY_CAUSES, send_digest
from adsync.notify.support import support_details
from adsync.push.flush import flush_connection
from adsync.sites import api_secrets
from tests.conftest import APPLY_URL, TOKEN_URL

pytestmark = pytest.mark.django_db

GOAL_NOT_FOUND = "The conversion name do not match an existing offline conversion goal."
CLICK_INVALID = "The Microsoft Click Id of the offline conversion is invalid."
QUOTED = 'Goal "Purchase " isn\'t active & cannot <receive> conversions.'


# --- Factories ----------------------------------------------------------------------------

@pytest.fixture
def make_staff(db):
    def make(email: str, digest: bool = True, alerts: bool = True, **flags):
        defaults = {"is_staff": True, "is_active": True}
        user = get_user_model().objects.create_user(username=email.split("@")[0], email=email, password="pw-12345678",
                                                    **{**defaults, **flags})
        StaffNotificationPreference.objects.create(user=user, digest=digest, alerts=alerts)
        return user
    return make


@pytest.fixture
def ops(make_staff):
    return make_staff("ops@example.com")


@pytest.fixture
def healthy(make_connection):
    """A connection that is active and synced recently: only what the test adds is news."""
    def make(site, **kwargs):
        return make_connection(site, last_insights_sync_at=timezone.now(), goals_refreshed_at=timezone.now(), **kwargs)
    return make


@pytest.fixture
def make_pushes(make_conversion):
    """`count` sync-log rows for the site's connection, in `status`, with Microsoft's answer."""
    def make(site, count: int, status: str = Push.ERROR, code: int | None = None, symbol: str = "",
             message: str = "", tracking_id: str = "", msclkid: str | None = None, at: datetime | None = None):
        conversions = [make_conversion(site, msclkid=msclkid) for _ in range(count)]
        moment = at or timezone.now()
        Push.objects.filter(conversion__in=conversions).update(
            status=status, error_code=code, error_symbol=symbol, error_message=message, tracking_id=tracking_id,
            updated_at=moment, created_at=moment)
    return make


def text_and_html(message) -> tuple[str, str]:
    (html_body, mimetype), = message.alternatives
    assert mimetype == "text/html"
    return message.body, html_body


# --- The digest ---------------------------------------------------------------------------

def test_the_digest_groups_errors_by_site_then_connection_then_error_class_in_both_parts(
        ops, make_site, healthy, make_pushes):
    shop, agency = make_site(name="Alpha shop"), make_site(name="Beta agency")
    shop_conn, agency_conn = healthy(shop), healthy(agency)
    make_pushes(shop, 3, code=5606, symbol="OfflineConversionNameInvalid", message=GOAL_NOT_FOUND,
                tracking_id="track-5606")
    make_pushes(shop, 2, code=5604, symbol="OfflineConversionMicrosoftClickIdInvalid", message=CLICK_INVALID)
    make_pushes(agency, 1, symbol="adsync:goal_not_found", message="Goal Name “Purchase ” is not in the account.")

    outcome = send_digest()

    assert outcome.sent == 1
    message, = mail.outbox
    assert message.to == ["ops@example.com"]
    assert message.subject == "[adsync] Sync digest: 6 errors on 2 connections"
    text, html_body = text_and_html(message)
    for body in (text, html.unescape(html_body)):
        assert body.index("Alpha shop") < body.index("5606 OfflineConversionNameInvalid") \
            < body.index("5604 OfflineConversionMicrosoftClickIdInvalid") < body.index("Beta agency") \
            < body.index("adsync:goal_not_found")
        assert GOAL_NOT_FOUND in body and CLICK_INVALID in body
        assert "TrackingId track-5606" in body.replace("<code>", "").replace("</code>", "")
        assert remedy_hint(5606) in body
        assert "adsync's pre-send check said" in body
        assert (f"http://127.0.0.1:8000/admin/adsync/push/?connection__id__exact={shop_conn.pk}"
                f"&status__exact=error") in body
        assert f"/admin/adsync/connection/{agency_conn.pk}/change/" in body
    assert "3 rows" in text and "2 rows" in text


def test_messages_are_verbatim_in_the_text_part_and_escaped_in_the_html_part(ops, site, healthy, make_pushes):
    healthy(site)
    make_pushes(site, 1, code=5600, symbol="Odd", message=QUOTED)

    send_digest()

    text, html_body = text_and_html(mail.outbox[0])
    assert QUOTED in text
    assert QUOTED not in html_body and html.escape(QUOTED) in html_body


def test_a_class_shows_at_most_three_distinct_messages(ops, site, healthy, make_pushes):
    healthy(site)
    for n in range(5):
        make_pushes(site, 1, code=5609, symbol="OutsideWindow", message=f"Outside the window, variant {n}.")

    send_digest()

    text, _ = text_and_html(mail.outbox[0])
    assert "5 rows" in text
    assert sum(f"variant {n}." in text for n in range(5)) == 3


def test_token_expired_and_stale_cards_are_reported_with_what_to_do(ops, make_site, make_connection):
    make_connection(make_site(name="Expired shop"), status=Connection.TOKEN_EXPIRED,
                    last_error="invalid_grant: AADSTS70000: The refresh token was revoked.")
    make_connection(make_site(name="Stale shop"), last_insights_sync_at=timezone.now() - timedelta(hours=30),
                    goals_refreshed_at=timezone.now() - timedelta(hours=30))

    send_digest()

    text, html_body = text_and_html(mail.outbox[0])
    assert "Token expired — invalid_grant: AADSTS70000: The refresh token was revoked." in text
    assert remedy_hint(None, Kind.RECONNECT) in text
    assert "Active but stale — No successful insights sync in the last 24 hours" in text and "Resync now" in text
    assert "Stale shop" in html_body and "Token expired" in html_body
    assert mail.outbox[0].subject == "[adsync] Sync digest: 2 connections to fix"


def test_a_high_pending_identity_share_lists_the_three_causes(ops, site, healthy, make_pushes):
    conn = healthy(site)
    make_pushes(site, 6, status=Push.SENT)
    make_pushes(site, 4, status=Push.PENDING_IDENTITY, msclkid="")

    send_digest()

    text, html_body = text_and_html(mail.outbox[0])
    assert mail.outbox[0].subject == "[adsync] Sync digest: 1 connection with a high pending_identity share"
    assert "pending_identity: 40% of 10 pushes (4)" in text
    for cause in PENDING_IDENTITY_CAUSES:
        assert cause in text and html.escape(cause) in html_body
    assert f"connection__id__exact={conn.pk}&status__exact=pending_identity" in text


def test_a_low_pending_identity_share_is_not_news(ops, site, healthy, make_pushes):
    healthy(site)
    make_pushes(site, 8, status=Push.SENT)
    make_pushes(site, 2, status=Push.PENDING_IDENTITY, msclkid="")

    outcome = send_digest()

    assert outcome.digest.is_empty and mail.outbox == []


def test_nothing_is_sent_when_there_is_nothing_to_report(ops, site, healthy, make_pushes):
    healthy(site)
    make_pushes(site, 5, status=Push.SENT)
    make_pushes(site, 3, code=5606, message=GOAL_NOT_FOUND, at=timezone.now() - timedelta(hours=30))

    outcome = send_digest()

    assert outcome.sent == 0 and mail.outbox == []
    assert outcome.line().startswith("nothing to report")


def test_only_active_staff_who_opted_in_get_the_digest_one_email_each(make_staff, site, healthy, make_pushes):
    make_staff("a@example.com")
    make_staff("b@example.com")
    make_staff("no-digest@example.com", digest=False)
    make_staff("former@example.com", is_active=False)
    make_staff("client@example.com", is_staff=False)
    healthy(site)
    make_pushes(site, 1, code=5606, message=GOAL_NOT_FOUND)

    send_digest()

    assert sorted(m.to[0] for m in mail.outbox) == ["a@example.com", "b@example.com"]
    assert all(len(m.to) == 1 for m in mail.outbox)


def test_the_command_dry_run_prints_the_email_and_sends_nothing(ops, site, healthy, make_pushes):
    healthy(site)
    make_pushes(site, 2, code=5606, message=GOAL_NOT_FOUND)
    out = io.StringIO()

    call_command("send_sync_digest", "--dry-run", stdout=out)

    assert mail.outbox == []
    printed = out.getvalue()
    assert "To: ops@example.com" in printed and "Subject: [adsync] Sync digest: 2 errors" in printed
    assert GOAL_NOT_FOUND in printed


def test_the_command_since_option_narrows_the_window(ops, site, healthy, make_pushes):
    healthy(site)
    make_pushes(site, 2, code=5606, message=GOAL_NOT_FOUND, at=timezone.now() - timedelta(hours=3))
    out = io.StringIO()

    call_command("send_sync_digest", "--since", "2h", stdout=out)
    assert mail.outbox == [] and "nothing to report" in out.getvalue()

    call_command("send_sync_digest", "--since", "4h", stdout=io.StringIO())
    assert len(mail.outbox) == 1


def test_the_digest_is_a_daily_cron_schedule_at_7_utc_by_default(settings):
    with time_machine.travel(datetime(2026, 3, 10, 9, 30, tzinfo=dt_timezone.utc), tick=False):
        ensure_schedules()
    digest = Schedule.objects.get(name="adsync:digest")
    assert (digest.schedule_type, digest.cron, digest.func) == (Schedule.CRON, "0 7 * * *",
                                                                "adsync.jobs.digest")
    assert digest.next_run == datetime(2026, 3, 11, 7, 0, tzinfo=dt_timezone.utc)

    settings.ADSYNC_DIGEST_CRON = "30 6 * * 1-5"
    with time_machine.travel(datetime(2026, 3, 10, 9, 30, tzinfo=dt_timezone.utc), tick=False):
        ensure_schedules()
    digest.refresh_from_db()
    assert digest.cron == "30 6 * * 1-5"
    assert digest.next_run == datetime(2026, 3, 11, 6, 30, tzinfo=dt_timezone.utc)


# --- Immediate alerts ---------------------------------------------------------------------

def invalid_grant(mocked) -> None:
    mocked.post(TOKEN_URL, status=400, json={
        "error": "invalid_grant", "error_description": "AADSTS70000: The provided grant has been revoked."})


def test_a_card_flipping_to_token_expired_emails_staff_who_opted_in_to_alerts(
        mocked, ops, make_staff, site, make_connection, make_conversion, django_capture_on_commit_callbacks):
    make_staff("digest-only@example.com", alerts=False)
    conn = make_connection(site, token_expires_at=timezone.now() - timedelta(minutes=1))
    make_conversion(site)
    invalid_grant(mocked)

    with django_capture_on_commit_callbacks(execute=True):
        flush_connection(conn)

    conn.refresh_from_db()
    assert conn.status == Connection.TOKEN_EXPIRED
    message, = mail.outbox
    assert message.to == ["ops@example.com"]
    assert message.subject == f"[adsync] Token expired: {conn}"
    text, html_body = text_and_html(message)
    assert "AADSTS70000: The provided grant has been revoked." in text
    assert "Reconnect" in text and f"/admin/adsync/connection/{conn.pk}/change/" in html_body


def test_alerts_are_debounced_to_one_per_connection_per_hour(
        mocked, ops, site, make_connection, make_conversion, django_capture_on_commit_callbacks):
    conn = make_connection(site, token_expires_at=timezone.now() - timedelta(minutes=1))
    make_conversion(site)
    invalid_grant(mocked)
    start = timezone.now()

    def expire_again(at: datetime) -> None:
        Connection.objects.filter(pk=conn.pk).update(status=Connection.ACTIVE)  # e.g. reconnected, then revoked
        with time_machine.travel(at, tick=False), django_capture_on_commit_callbacks(execute=True):
            Push.objects.update(next_attempt_at=timezone.now())
            flush_connection(Connection.objects.get(pk=conn.pk))

    expire_again(start)
    expire_again(start + timedelta(minutes=30))
    assert len(mail.outbox) == 1
    expire_again(start + timedelta(minutes=61))
    assert len(mail.outbox) == 2


def test_a_card_already_expired_does_not_alert_again(ops, site, make_connection, django_capture_on_commit_callbacks):
    conn = make_connection(site, status=Connection.TOKEN_EXPIRED)

    with django_capture_on_commit_callbacks(execute=True):
        health.mark_token_expired(conn, Connection.TOKEN_REFRESH, MicrosoftAdsError(
            "No refresh token stored: connect the account.", kind=Kind.RECONNECT))

    assert mail.outbox == []
    conn.refresh_from_db()
    assert conn.last_error == "No refresh token stored: connect the account."


def partial_errors(count: int) -> dict:
    return {"json": {"PartialErrors": [
        {"Code": 5606, "ErrorCode": "OfflineConversionNameInvalid", "Index": i, "Type": "BatchError",
         "Message": GOAL_NOT_FOUND} for i in range(count)]}, "headers": {"TrackingId": "track-flush"}}


def test_a_flush_with_more_errors_than_the_threshold_sends_an_alert(
        mocked, settings, ops, site, connection, make_conversion, django_capture_on_commit_callbacks):
    settings.ADSYNC_ALERT_ERROR_THRESHOLD = 2
    for _ in range(3):
        make_conversion(site)
    mocked.post(APPLY_URL, **partial_errors(3))

    with django_capture_on_commit_callbacks(execute=True):
        run_flush([connection.pk])

    message, = mail.outbox
    assert message.subject == f"[adsync] 3 errors in one flush: {connection}"
    text, html_body = text_and_html(message)
    assert "more than 2" in text and GOAL_NOT_FOUND in text and "TrackingId track-flush" in text
    assert remedy_hint(5606) in text and GOAL_NOT_FOUND in html_body


def test_a_flush_at_the_threshold_sends_no_alert(
        mocked, settings, ops, site, connection, make_conversion, django_capture_on_commit_callbacks):
    settings.ADSYNC_ALERT_ERROR_THRESHOLD = 3
    for _ in range(3):
        make_conversion(site)
    mocked.post(APPLY_URL, **partial_errors(3))

    with django_capture_on_commit_callbacks(execute=True):
        run_flush([connection.pk])

    assert mail.outbox == []


class BrokenSMTPBackend(BaseEmailBackend):
    def send_messages(self, email_messages):
        raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")


def test_a_failing_mail_server_never_breaks_the_flush(
        mocked, settings, ops, site, connection, make_conversion, django_capture_on_commit_callbacks):
    settings.EMAIL_BACKEND = "tests.notify.test_notifications.BrokenSMTPBackend"
    settings.ADSYNC_ALERT_ERROR_THRESHOLD = 0
    make_conversion(site)
    mocked.post(APPLY_URL, **partial_errors(1))

    with django_capture_on_commit_callbacks(execute=True):
        result, = run_flush([connection.pk])

    assert result.errors == 1
    assert Push.objects.get().status == Push.ERROR


@pytest.mark.django_db(transaction=True)
def test_a_consent_revoked_in_the_emulator_alerts_staff_end_to_end(live_server, settings, make_staff, make_site,
                                                                   make_connection, make_conversion):
    from emulator.demo import ensure_demo_data
    from emulator.models import EmulatorBehaviour

    base = live_server.url + "/emulator"
    settings.MICROSOFT_ADS_ENVIRONMENT = "emulator"
    settings.MICROSOFT_ADS_OAUTH_TOKEN_URL = base + "/oauth2/v2.0/token"
    settings.MICROSOFT_ADS_CAMPAIGN_API_URL = base + "/campaign"
    settings.MICROSOFT_ADS_TIMEOUT = 10
    account = ensure_demo_data()
    EmulatorBehaviour.load()
    EmulatorBehaviour.objects.filter(pk=1).update(refresh_tokens_revoked=True)
    make_staff("oncall@example.com")
    site = make_site()
    conn = make_connection(site, customer_id=account.customer_id, account_id=account.account_id,
                           access_token="", refresh_token=account.refresh_token, token_expires_at=None)
    make_conversion(site)

    flush_connection(conn)

    conn.refresh_from_db()
    assert conn.status == Connection.TOKEN_EXPIRED
    assert [m.subject for m in mail.outbox] == [f"[adsync] Token expired: {conn}"]
    assert "invalid_grant" in mail.outbox[0].body
    assert Push.objects.get().status == Push.QUEUED  # waits for Reconnect, nothing lost


# --- Support details ----------------------------------------------------------------------

SECRETS = ["at-SECRET-access-123", "rt-SECRET-refresh-456", "cs-SECRET-client-789"]


@pytest.fixture
def card(site, make_connection, make_pushes):
    conn = make_connection(site, goals={"purchase": "Purchase ", "lead": "Lead"}, access_token=SECRETS[0],
                           refresh_token=SECRETS[1], client_id="my-azure-app", client_secret=SECRETS[2],
                           status=Connection.TOKEN_EXPIRED, last_error="invalid_grant: consent revoked")
    make_pushes(site, 2, code=5606, symbol="OfflineConversionNameInvalid", message=GOAL_NOT_FOUND,
                tracking_id="track-a", at=timezone.now() - timedelta(minutes=10))
    make_pushes(site, 1, code=5604, symbol="OfflineConversionMicrosoftClickIdInvalid", message=CLICK_INVALID,
                tracking_id="track-b", at=timezone.now() - timedelta(minutes=5))
    return conn


def test_support_details_have_what_support_asks_for(card):
    text = support_details(card)

    assert "Card status: Token expired" in text
    assert "Microsoft Ads Account ID: 187654321" in text
    assert 'purchase → "Purchase "' in text and 'lead → "Lead"' in text
    assert "invalid_grant: consent revoked" in text
    recent = text.split("Recent errors from the sync log (verbatim):")[1]
    assert recent.index(CLICK_INVALID) < recent.index(GOAL_NOT_FOUND)  # newest first, one per message
    assert recent.count(GOAL_NOT_FOUND) == 1
    assert "TrackingId track-b" in recent and "TrackingId track-a" in recent


def test_support_details_contain_no_token_or_secret(card, site):
    api_secret = api_secrets.issue(site)

    text = support_details(card)

    for secret in [*SECRETS, api_secret, site.api_secrets.get().secret_hash]:
        assert secret not in text


def test_the_card_shows_support_details_in_a_read_only_box_with_a_copy_button(card, admin_client):
    page = admin_client.get(f"/admin/adsync/connection/{card.pk}/change/").content.decode()

    assert '<textarea id="adsync-support-details" readonly' in page
    assert "Copy support details</button>" in page
    assert "Microsoft Ads Account ID: 187654321" in page
    for secret in SECRETS:
        assert secret not in page
    assert "<script src" not in page.split('id="adsync-support-details"')[1].split("</button>")[0]


# --- Dashboard ----------------------------------------------------------------------------

def test_the_dashboard_shows_each_connection_with_its_chart_and_rates(admin_client, make_site, healthy, make_pushes):
    site = make_site(name="Chart shop")
    conn = healthy(site)
    make_pushes(site, 5, status=Push.SENT)
    make_pushes(site, 3, status=Push.PENDING_IDENTITY, msclkid="")
    make_pushes(site, 2, code=5606, message=GOAL_NOT_FOUND, at=timezone.now() - timedelta(days=3))

    page = admin_client.get("/admin/adsync/dashboard/").content.decode()

    panel = page.split(f'id="connection-{conn.pk}"')[1].split("</section>")[0]
    assert f'href="/admin/adsync/connection/{conn.pk}/change/"' in panel
    assert "50%" in panel and "5 of 10 sent" in panel  # match rate
    assert "30%" in panel  # pending_identity share
    assert "<svg" in panel and panel.count("<rect") == 3  # today: sent + pending_identity; 3 days ago: error
    assert "http" not in panel.replace("http://www.w3.org/2000/svg", "")  # nothing fetched


def test_the_dashboard_shows_the_snippet_inbox_and_warns_when_the_worker_falls_behind(admin_client, make_site):
    from adsync.models import Hit

    site = make_site()
    now = timezone.now()
    Hit.objects.create(site=site, kind=Hit.CONVERSION, payload={}, received_at=now - timedelta(seconds=30))
    def page() -> str:  # one space for any run of whitespace (template line breaks, &nbsp; in "12 minutes")
        return " ".join(admin_client.get("/admin/adsync/dashboard/").content.decode().split())

    assert "<strong>1</strong> hit waiting to be stored, the oldest received 0 minutes ago." in page()
    assert "not running" not in page()

    Hit.objects.create(site=site, kind=Hit.CONVERSION, payload={}, received_at=now - timedelta(minutes=12))
    Hit.objects.create(site=site, kind=Hit.CLICK, payload={}, received_at=now - timedelta(hours=2),
                       error="KeyError: 'msclkid'")
    text = page()
    assert "<strong>2</strong> hits waiting to be stored, the oldest received 12 minutes ago" in text
    assert "the worker is behind or not running" in text  # the failed hit's age does not count
    assert 'href="/admin/adsync/hit/?error__isempty=0">1 could not be stored</a>' in text


def test_the_admin_index_links_to_the_dashboard(admin_client):
    assert 'href="/admin/adsync/dashboard/"' in admin_client.get("/admin/").content.decode()


def test_the_dashboard_makes_the_same_number_of_queries_for_one_or_many_connections(
        admin_client, make_site, healthy, make_pushes):
    def queries() -> int:
        with CaptureQueriesContext(db_connection) as captured:
            assert admin_client.get("/admin/adsync/dashboard/").status_code == 200
        return len(captured)

    first = make_site()
    healthy(first)
    make_pushes(first, 1, status=Push.SENT)
    one = queries()
    for _ in range(3):
        other = make_site()
        healthy(other)
        make_pushes(other, 4, status=Push.SENT, at=timezone.now() - timedelta(days=2))
        make_pushes(other, 2, code=5604, message=CLICK_INVALID)

    assert queries() == one
