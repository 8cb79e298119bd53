"""The card's state at a glance: each state's colour, reason and one fix, the same on the list, the card,
the dashboard, the digest and the support details; and what Connect, Reconnect and an account switch leave."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import responses
from django.core import mail
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ

from adsync.connections import health
from adsync.links import sync_log_url
from adsync.models import AccountGoal, CampaignInsight, Connection, Push, StaffNotificationPreference
from adsync.notify.digest import send_digest
from adsync.notify.support import support_details
from adsync.push.flush import flush_connection
from tests.conftest import APPLY_URL, GOALS_URL, run_queued_jobs
from tests.connections.test_connection_lifecycle import (
    AGENCY,
    STORE,
    callback,
    mock_consent,
    pick_url,
    start,
)

pytestmark = pytest.mark.django_db


def fault(code: int, symbol: str, message: str, status: int = 400, **headers) -> dict:
    return {"status": status, "headers": headers,
            "json": {"Type": "AdApiFaultDetail", "TrackingId": "t-1",
                     "Errors": [{"Code": code, "ErrorCode": symbol, "Message": message}]}}


@pytest.fixture
def ready(site, make_connection):
    """A connection whose goals were fetched and whose insights synced an hour ago: green until something fails."""
    def make(**kwargs) -> Connection:
        now = timezone.now()
        connection = make_connection(site, goals_refreshed_at=now - timedelta(hours=1),
                                     last_insights_sync_at=now - timedelta(hours=1), **kwargs)
        AccountGoal.objects.create(connection=connection, goal_id="1", name="Purchase",
                                   first_seen_at=now - timedelta(days=3))
        return connection
    return make


def state_after_upload(mocked, connection, site, make_conversion, answer: dict) -> health.CardState:
    """The card after a real flush whose ApplyOfflineConversions call got `answer`."""
    make_conversion(site)
    mocked.post(APPLY_URL, **answer)
    flush_connection(connection)
    return health.card_state(Connection.objects.get(pk=connection.pk))


@pytest.mark.parametrize("answer, label, colour, fix", [
    (fault(106, "UserIsNotAuthorized", "The user is not authorized to perform this action.", 403),
     "Failing: no access to this account", health.RED, health.RECONNECT),
    (fault(122, "PersonalIdentityNotAvailable", "The personal identity is not available."),
     "Failing: sign-in refused", health.RED, health.RECONNECT),
    (fault(5613, "OfflineConversionPilotNotEnabledForCustomer", "Not enabled."),
     "Failing: account or developer token refused", health.RED, health.SYNC_LOG),
    (fault(1102, "CampaignServiceInvalidAccountId", "The account ID is invalid."),
     "Failing: account or developer token refused", health.RED, health.RECONNECT),
    (fault(0, "InternalError", "An internal error has occurred.", 500),
     "Uploads retrying", health.AMBER, health.SYNC_LOG),
    (fault(117, "CallRateExceeded", "Too many calls.", 429, **{"Retry-After": "300"}),
     "Throttled by Microsoft", health.AMBER, health.SYNC_LOG),
])
def test_a_failing_upload_never_leaves_the_card_green(mocked, site, ready, make_conversion, answer, label, colour,
                                                      fix):
    connection = ready()

    state = state_after_upload(mocked, connection, site, make_conversion, answer)

    assert (state.label, state.colour, state.fix) == (label, colour, fix)


def test_an_upload_call_microsoft_takes_clears_an_earlier_upload_failure_even_if_its_rows_fail(
        mocked, site, ready, make_conversion):
    """The account answers again: the card is no longer "Uploads retrying", though the row itself was refused."""
    connection = ready()
    assert state_after_upload(mocked, connection, site, make_conversion,
                              fault(0, "InternalError", "An internal error has occurred.", 500)).label == "Uploads retrying"
    Push.objects.update(next_attempt_at=timezone.now())
    mocked.replace(responses.POST, APPLY_URL, json={"PartialErrors": [
        {"Index": 0, "Code": 5604, "ErrorCode": "OfflineConversionMicrosoftClickIdInvalid",
         "Message": "The Microsoft Click Id of the offline conversion is invalid."}]})

    flush_connection(Connection.objects.get(pk=connection.pk))

    assert health.card_state(Connection.objects.get(pk=connection.pk)).label != "Uploads retrying"
