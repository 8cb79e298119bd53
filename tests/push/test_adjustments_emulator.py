"""Adjustments end to end: the server API, the flush and the built-in emulator over real HTTP
(pytest-django's live_server), as Microsoft would receive them."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from adsync.jobs import run_flush as flush_conversions
from adsync.models import Push, Site
from adsync.sites import api_secrets
from emulator.demo import ACCOUNT_ID
from emulator.demo_site import ensure_demo_site
from emulator.models import EmulatorAccount, EmulatorAdjustment, EmulatorClick, EmulatorConversion
from tests.emulator.support import ADJUST, access_token_for, iso, point_adsync_at, post

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shop(live_server, settings) -> Site:
    """The demo site, connected to the emulator behind a real HTTP server."""
    point_adsync_at(live_server, settings)
    settings.ADSYNC_CLICK_HOLD_MINUTES = 0
    return ensure_demo_site()


@pytest.fixture
def secret(shop) -> str:
    return api_secrets.issue(shop)


def call(client, method: str, secret: str, path: str, body: dict | None = None):
    return getattr(client, method)(path, json.dumps(body) if body is not None else "", content_type="application/json",
                                   headers={"Authorization": f"Bearer {secret}"})


@pytest.fixture
def sold(client, secret) -> EmulatorClick:
    """A purchase after a click the emulator knows, sent to it: Microsoft has the conversion."""
    click = EmulatorClick.objects.create(account=EmulatorAccount.objects.get(account_id=ACCOUNT_ID),
                                         clicked_at=timezone.now() - timedelta(hours=3))
    call(client, "post", secret, "/api/v1/conversions", {
        "event": "purchase", "orderId": "E-1", "value": 49.9, "currency": "USD", "msclkid": click.msclkid,
        "time": iso(timezone.now() - timedelta(hours=2))})
    flush_conversions()
    assert Push.objects.get().status == Push.SENT
    return click


def test_a_restate_reaches_microsoft_and_changes_the_value_its_reports_show(client, secret, sold):
    response = call(client, "patch", secret, "/api/v1/conversions/E-1", {"value": 25, "currency": "EUR"})
    flush_conversions()

    assert response.status_code == 200
    restate = Push.objects.get(kind=Push.RESTATE)
    received = EmulatorConversion.objects.get(msclkid=sold.msclkid)
    assert (restate.status, restate.error_message) == (Push.SENT, "")
    assert (received.reported_value, received.restated_currency, received.retracted) == (25.0, "EUR", False)
    assert restate.tracking_id == EmulatorAdjustment.objects.get().tracking_id


def test_a_retract_reaches_microsoft_and_takes_the_conversion_out_of_its_reports(client, secret, sold):
    call(client, "delete", secret, "/api/v1/conversions/E-1")
    flush_conversions()

    assert Push.objects.get(kind=Push.RETRACT).status == Push.SENT
    assert EmulatorConversion.objects.get(msclkid=sold.msclkid).retracted


def test_a_retract_before_the_flush_sends_nothing_to_microsoft(client, secret):
    click = EmulatorClick.objects.create(account=EmulatorAccount.objects.get(account_id=ACCOUNT_ID),
                                         clicked_at=timezone.now() - timedelta(hours=3))
    call(client, "post", secret, "/api/v1/conversions", {"event": "purchase", "orderId": "E-2", "msclkid": click.msclkid})

    call(client, "delete", secret, "/api/v1/conversions/E-2")
    flush_conversions()

    assert Push.objects.get().status == Push.CANCELLED
    assert not EmulatorConversion.objects.exists() and not EmulatorAdjustment.objects.exists()


def test_microsofts_refusal_of_an_adjustment_is_kept_verbatim(client, secret, sold, shop):
    # Someone retracted it in Microsoft Ads directly; adsync does not know and restates it.
    original = Push.objects.get()
    demo_user = EmulatorAccount.objects.get(account_id=ACCOUNT_ID).users.first()
    retract = {"AdjustmentType": "Retract", "AdjustmentTime": iso(timezone.now()), "ConversionName": "Purchase",
               "ConversionTime": iso(original.conversion_time), "MicrosoftClickId": sold.msclkid}
    assert post(client, ADJUST, {"OfflineConversionAdjustments": [retract]},
                access_token_for(demo_user)).json()["PartialErrors"] == []

    call(client, "patch", secret, "/api/v1/conversions/E-1", {"value": 10})
    flush_conversions()

    restate = Push.objects.get(kind=Push.RESTATE)
    assert (restate.status, restate.error_code, restate.error_symbol) == (
        Push.ERROR, 5627, "OfflineConversionRestateRetractNotSupported")
    assert restate.error_message.startswith("The offline conversion restate or retract operation is")
