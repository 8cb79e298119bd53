"""Consent on the server side: the server API's and the snippet endpoint's `consent` signal, the site's
"consent required" setting, and skipped_no_consent rows that are never sent and never count as failures."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from adsync.admin.dashboard import build_panels
from adsync.intake import inbox
from adsync.intake.identity import hash_email
from adsync.jobs import run_flush
from adsync.models import Click, Conversion, Hit, Push
from adsync.notify.digest import build_digest
from adsync.sites import api_secrets
from tests.conftest import APPLY_URL

pytestmark = pytest.mark.django_db

MSCLKID = "f894f652ea334e739002f7167ab8f8e3"
EMAIL = "customer@example.com"
ORIGIN = "https://shop.example.com"


@pytest.fixture
def secret(site) -> str:
    return api_secrets.issue(site)


def api(client, secret: str, **fields):
    body = {"event": "purchase", "orderId": "A-1", "value": 10, "msclkid": MSCLKID, "visitorId": "v-1",
            "email": EMAIL, **fields}
    return client.post("/api/v1/conversions", json.dumps(body), content_type="application/json",
                       headers={"Authorization": f"Bearer {secret}"})


def collect(client, site, **fields):
    body = {"site": site.key, "type": "click", "visitorId": "v-1", "msclkid": MSCLKID, **fields}
    response = client.post("/t/v1/collect", json.dumps(body), content_type="text/plain", headers={"Origin": ORIGIN})
    inbox.drain()
    return response


# --- The server API -----------------------------------------------------------------------------------

def test_a_conversion_with_ad_storage_denied_is_kept_as_a_count_and_never_sent(client, mocked, site, connection,
                                                                               secret):
    response = api(client, secret, consent={"adStorage": "denied"})
    run_flush()

    assert response.status_code == 201
    assert (response.json()["consent"], response.json()["pushes"][0]["status"]) == ("denied", "skipped_no_consent")
    conversion = Conversion.objects.get()
    assert (conversion.order_id, conversion.value, conversion.consent) == ("A-1", 10, Conversion.CONSENT_DENIED)
    assert (conversion.msclkid, conversion.visitor_id, conversion.hashed_email) == ("", "", "")
    push = Push.objects.get()
    assert (push.status, push.error_symbol, push.msclkid) == (Push.SKIPPED_NO_CONSENT, "adsync:no_consent", "")
    assert push.error_message.startswith("The visitor denied ad storage consent")
    assert len(mocked.calls) == 0


def test_on_a_site_that_requires_consent_no_signal_means_skipped_and_says_why(client, site, connection, secret):
    site.consent_required = True
    site.save()

    api(client, secret)

    conversion = Conversion.objects.get()
    assert conversion.consent == Conversion.CONSENT_MISSING
    push = Push.objects.get()
    assert push.status == Push.SKIPPED_NO_CONSENT
    assert "the site requires consent" in push.error_message and "adsync.consent()" in push.error_message


def test_on_a_site_that_does_not_require_consent_no_signal_changes_nothing(client, site, connection, secret):
    api(client, secret)

    conversion = Conversion.objects.get()
    assert (conversion.consent, conversion.msclkid, conversion.hashed_email) == ("", MSCLKID, hash_email(EMAIL))
    assert Push.objects.get().status == Push.QUEUED


def test_granted_ad_storage_with_ad_user_data_denied_keeps_the_click_but_not_the_hashes(client, site, connection,
                                                                                        secret):
    site.consent_required = True
    site.save()

    api(client, secret, phone="+14255551234", consent={"adStorage": "granted", "adUserData": "denied"})

    conversion = Conversion.objects.get()
    assert (conversion.consent, conversion.msclkid) == (Conversion.CONSENT_GRANTED, MSCLKID)
    assert (conversion.hashed_email, conversion.hashed_phone) == ("", "")
    assert Push.objects.get().status == Push.QUEUED


def test_ad_user_data_not_given_follows_ad_storage(client, site, connection, secret):
    site.consent_required = True
    site.save()

    api(client, secret, consent={"adStorage": "granted"})

    assert Conversion.objects.get().hashed_email == hash_email(EMAIL)


@pytest.mark.parametrize("consent, error", [
    ({"adStorage": "yes"}, 'consent.adStorage: must be "granted" or "denied"'),
    ({"adUserData": True}, 'consent.adUserData: must be "granted" or "denied"'),
    ({"ad_storage": "granted"}, "consent.ad_storage: is not a known field (adStorage, adUserData)"),
    ("granted", 'consent: must be an object, e.g. {"adStorage": "granted"}'),
])
def test_an_invalid_consent_signal_is_400_and_stores_nothing(client, site, connection, secret, consent, error):
    response = api(client, secret, consent=consent)

    assert (response.status_code, response.json()) == (400, {"error": error})
    assert not Conversion.objects.exists()


# --- The snippet endpoint ---------------------------------------------------------------------------------

def test_a_click_reported_with_ad_storage_denied_is_not_kept(client, site):
    response = collect(client, site, consent={"adStorage": "denied"})

    assert response.status_code == 202
    assert not Click.objects.exists() and not Hit.objects.exists()


def test_a_click_without_a_signal_is_not_kept_where_consent_is_required_and_kept_elsewhere(client, site,
                                                                                           make_site):
    site.consent_required = True
    site.save()
    other = make_site()

    collect(client, site)
    collect(client, other)

    assert list(Click.objects.values_list("site", flat=True)) == [other.pk]


def test_a_browser_conversion_with_ad_storage_denied_is_skipped(client, site, connection):
    body = {"site": site.key, "type": "conversion", "event": "purchase", "orderId": "B-1", "visitorId": "v-1",
            "msclkid": MSCLKID, "consent": {"adStorage": "denied", "somethingNew": 1}}  # unknown keys: ignored

    client.post("/t/v1/collect", json.dumps(body), content_type="text/plain", headers={"Origin": ORIGIN})
    inbox.drain()

    assert Push.objects.get().status == Push.SKIPPED_NO_CONSENT
    assert Conversion.objects.get().msclkid == ""


def test_an_inbox_hit_from_before_consent_existed_is_stored_as_before(site, connection):
    Hit.objects.create(site=site, kind=Hit.CONVERSION, payload={
        "event": "purchase", "order_id": "OLD-1", "value": "5", "currency": "USD", "occurred_at": None,
        "msclkid": MSCLKID, "visitor_id": "v-1", "hashed_email": "", "hashed_phone": ""})

    inbox.drain()

    assert Push.objects.get().status == Push.QUEUED


# --- Never a failure ------------------------------------------------------------------------------------------

def test_skipped_rows_count_nowhere_as_failures_nor_in_the_match_rate(client, mocked, site, connection, secret):
    type(connection).objects.filter(pk=connection.pk).update(  # a healthy card
        last_insights_sync_at=timezone.now(), goals_refreshed_at=timezone.now())
    connection.account_goals.create(goal_id="1", name="Purchase", first_seen_at=timezone.now() - timedelta(days=1))
    api(client, secret, orderId="A-1")
    for n in range(3):
        api(client, secret, orderId=f"S-{n}", consent={"adStorage": "denied"})
    mocked.post(APPLY_URL, json={"PartialErrors": []}, headers={"TrackingId": "t"})

    [result] = run_flush()

    assert (result.sent, result.errors) == (1, 0)  # the flush's error count feeds the alerts
    [panel] = build_panels()
    assert (panel.match_rate, panel.total) == ("100%", 1)
    digest = build_digest(timezone.now() - timedelta(hours=1))
    assert (digest.errors, digest.is_empty) == (0, True)


def test_the_site_page_shows_the_tag_with_consent_mode_when_consent_is_required(admin_client, site):
    url = f"/admin/adsync/site/{site.pk}/change/"
    tag = f'data-site="{site.key}" data-consent="required"&gt;'

    assert tag not in admin_client.get(url).content.decode().replace("&quot;", '"')
    site.consent_required = True
    site.save()
    assert tag in admin_client.get(url).content.decode().replace("&quot;", '"')
