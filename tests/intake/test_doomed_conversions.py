"""Conversions adsync would refuse before sending are refused at the server API at once (a 400 naming the field),
and enhanced matching follows each goal's own enhanced-conversions flag."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from adsync.models import AccountGoal, Click, Conversion, Push
from adsync.push.flush import flush_connection
from adsync.sites import api_secrets
from tests.conftest import APPLY_URL

pytestmark = pytest.mark.django_db

MSCLKID = "f894f652ea334e739002f7167ab8f8e3"


def api(client, site, body):
    return client.post("/api/v1/conversions", json.dumps(body), content_type="application/json",
                       headers={"Authorization": f"Bearer {api_secrets.issue(site)}"})


def iso(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def nothing_stored() -> bool:
    return not Conversion.objects.exists() and not Push.objects.exists()


def test_a_conversion_91_days_old_is_refused_at_once_naming_the_field(client, site, connection):
    response = api(client, site, {"event": "purchase", "orderId": "A-1", "msclkid": MSCLKID,
                                  "time": iso(timezone.now() - timedelta(days=91))})

    assert response.status_code == 400
    assert response.json() == {"error": "time: is more than 90 days ago; Microsoft accepts offline conversions up to "
                                        "90 days old"}
    assert nothing_stored()


def test_a_conversion_89_days_old_is_accepted(client, site, connection):
    response = api(client, site, {"event": "purchase", "orderId": "A-1", "msclkid": MSCLKID,
                                  "time": iso(timezone.now() - timedelta(days=89))})

    assert response.status_code == 201
    assert Push.objects.get().status == Push.QUEUED


def test_a_conversion_before_its_known_click_is_refused_at_once(client, site, connection):
    clicked = timezone.now().replace(microsecond=0) - timedelta(hours=1)
    Click.objects.create(site=site, visitor_id="v1", msclkid=MSCLKID, clicked_at=clicked)

    response = api(client, site, {"event": "purchase", "orderId": "A-1", "msclkid": MSCLKID,
                                  "time": iso(clicked - timedelta(hours=2))})

    assert response.status_code == 400
    assert response.json()["error"] == (f"time: is earlier than the click ({iso(clicked)}); check the time zone of "
                                        f"the time you send")
    assert nothing_stored()


def test_a_batch_with_doomed_items_names_each_and_stores_none(client, site, connection):
    clicked = timezone.now().replace(microsecond=0) - timedelta(hours=1)
    Click.objects.create(site=site, visitor_id="v1", msclkid=MSCLKID, clicked_at=clicked)

    response = api(client, site, {"conversions": [
        {"event": "purchase", "orderId": "ok", "msclkid": MSCLKID},
        {"event": "purchase", "orderId": "early", "msclkid": MSCLKID, "time": iso(clicked - timedelta(minutes=5))},
        {"event": "purchase", "orderId": "fine-without-click", "time": iso(clicked - timedelta(minutes=5))},
    ]})

    assert response.status_code == 400
    assert response.json()["error"] == [f"conversions[1].time: is earlier than the click ({iso(clicked)}); check "
                                         f"the time zone of the time you send"]
    assert nothing_stored()


def test_the_pre_send_check_and_the_ingest_apply_the_same_rule(mocked, site, connection, make_conversion):
    """A row that got in before the rule (or grew old in the queue) is refused before sending, same words."""
    make_conversion(site, occurred_at=timezone.now() - timedelta(days=91))

    flush_connection(connection)

    push = Push.objects.get()
    assert (push.error_symbol, push.error_message) == (
        "adsync:older_than_90_days", "The conversion is more than 90 days old; Microsoft no longer accepts it.")


# --- Enhanced conversions per goal ---------------------------------------------------------------------

@pytest.fixture
def enhanced_connection(site, make_connection):
    """Enhanced conversions switched on for the connection; the goal list fetched: Purchase on, Lead off."""
    connection = make_connection(site, {"purchase": "Purchase", "lead": "Lead"}, enhanced_conversions=True,
                                 goals_refreshed_at=timezone.now())
    long_ago = timezone.now() - timedelta(days=3)
    AccountGoal.objects.create(connection=connection, goal_id="1", name="Purchase", enhanced_conversions=True,
                               first_seen_at=long_ago)
    AccountGoal.objects.create(connection=connection, goal_id="2", name="Lead", enhanced_conversions=False,
                               first_seen_at=long_ago)
    return connection


def test_an_email_only_conversion_waits_for_a_click_when_its_goal_has_enhanced_conversions_off(
        client, site, enhanced_connection):
    api(client, site, {"event": "lead", "orderId": "L-1", "email": "someone@example.com"})
    api(client, site, {"event": "purchase", "orderId": "P-1", "email": "someone@example.com"})

    statuses = dict(Push.objects.values_list("goal_name", "status"))
    assert statuses == {"Lead": Push.PENDING_IDENTITY, "Purchase": Push.QUEUED}


def test_a_queued_email_only_row_whose_goal_turned_enhanced_off_is_not_sent(mocked, site, enhanced_connection,
                                                                             make_conversion):
    make_conversion(site, msclkid="", hashed_email="e" * 64)
    AccountGoal.objects.filter(name="Purchase").update(enhanced_conversions=False)

    flush_connection(enhanced_connection)

    push = Push.objects.get()
    assert (push.status, push.error_symbol, push.attempts) == (Push.ERROR, "adsync:enhanced_conversions_off", 0)
    assert 'enhanced conversions are off for the goal "Purchase"' in push.error_message
    assert not [call for call in mocked.calls if call.request.url == APPLY_URL]


def test_without_a_fetched_goal_list_the_connections_switch_decides(site, make_connection, make_conversion):
    make_connection(site, enhanced_conversions=True)
    make_conversion(site, msclkid="", hashed_email="e" * 64)

    assert Push.objects.get().status == Push.QUEUED
