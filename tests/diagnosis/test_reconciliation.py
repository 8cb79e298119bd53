"""Reconciliation: what adsync sent and Microsoft accepted, next to what Microsoft's per-goal report counts.

Conversions really go to the emulator through the flush (live_server); the emulator's per-goal report is
built from what it received, so retracting some there is Microsoft counting fewer than adsync sent.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
import responses as responses_lib
from django.utils import timezone

from adsync.diagnosis import reconciliation
from adsync.jobs import run_flush
from adsync.models import Click, Conversion, GoalReportDay, Push
from adsync.models.diagnosis import PASS, WARN
from emulator.models import EmulatorAccount, EmulatorClick, EmulatorConversion

pytestmark = pytest.mark.django_db


def days_ago(n: int):
    return timezone.now().astimezone(UTC).date() - timedelta(days=n)


def send_through_emulator(conn, site, make_conversion, count: int, day, *, sent_hours_later: float = 2) -> None:
    """`count` conversions of `day`, each with a real emulator click the snippet saw land, flushed to the emulator;
    the sync log then says they were sent `sent_hours_later` hours after 10:00 that day (when the upload happened)."""
    store = EmulatorAccount.objects.get(account_id=conn.account_id)
    moment = datetime.combine(day, time(10), tzinfo=UTC)
    for i in range(count):
        click = EmulatorClick.objects.create(account=store, clicked_at=moment - timedelta(hours=1))
        Click.objects.create(site=site, visitor_id=f"visitor-{click.msclkid}", msclkid=click.msclkid,
                             clicked_at=click.clicked_at, landing_url=f"https://shop.example.com/?msclkid={click.msclkid}")
        make_conversion(site, msclkid=click.msclkid, click_time=click.clicked_at,
                        occurred_at=moment + timedelta(minutes=i))
    run_flush([conn.pk])
    sent = Push.objects.filter(connection=conn, conversion_time__date=day, status=Push.SENT)
    assert sent.count() == count
    sent.update(sent_at=min(moment + timedelta(hours=sent_hours_later), timezone.now()))


def test_matching_counts_pass_and_the_report_rows_are_stored_per_goal_and_day(connected, check, site,
                                                                               make_conversion):
    day = days_ago(3)
    send_through_emulator(connected, site, make_conversion, 12, day)

    result = check(connected).result("reconciliation")

    assert result.outcome == PASS, "\n".join(result.lines())
    assert any(line.startswith("✔ “Purchase”: adsync sent 12, Microsoft counts 12 over") for line in result.evidence)
    stored = GoalReportDay.objects.get(connection=connected, goal_name="Purchase", date=day)
    assert stored.conversions == Decimal("12.00") and stored.goal_id
    assert GoalReportDay.objects.filter(connection=connected, goal_name="Purchase").count() == 14  # zero days too


def test_a_gap_beyond_the_threshold_past_the_reporting_lag_is_a_warning(connected, check, site, make_conversion):
    day = days_ago(3)
    send_through_emulator(connected, site, make_conversion, 12, day)
    retracted = EmulatorConversion.objects.order_by("id").values_list("id", flat=True)[:4]
    EmulatorConversion.objects.filter(id__in=list(retracted)).update(retracted=True)

    run = check(connected)

    result = run.result("reconciliation")
    assert result.outcome == WARN
    assert result.summary == ("Microsoft counts 33 % fewer conversions for “Purchase” than adsync sent (8 vs 12, 12 "
                              "compared day(s)).")
    assert result.link == f"/admin/adsync/connection/{connected.pk}/reconciliation/"
    connected.refresh_from_db()
    assert [p["key"] for p in connected.diagnosis_summary["problems"]] == ["reconciliation"]


def test_the_gap_threshold_is_a_setting(connected, check, site, make_conversion, settings):
    settings.ADSYNC_RECONCILE_GAP_PERCENT = 50
    send_through_emulator(connected, site, make_conversion, 12, days_ago(3))
    EmulatorConversion.objects.filter(id__in=list(EmulatorConversion.objects.values_list("id", flat=True)[:4])).update(
        retracted=True)

    assert check(connected).result("reconciliation").outcome == PASS


def test_days_still_inside_the_reporting_lag_are_shown_but_not_compared(connected, check, site, make_conversion):
    yesterday = days_ago(1)
    send_through_emulator(connected, site, make_conversion, 12, yesterday, sent_hours_later=0)
    EmulatorConversion.objects.update(retracted=True)  # Microsoft has counted nothing yet

    run = check(connected)

    assert run.result("reconciliation").outcome == PASS
    panel, = reconciliation.panels(connected)
    line = next(d for d in panel.days if d.day == yesterday)
    assert (line.sent, line.reported, line.state) == (12, Decimal("0.00"), "within the reporting lag")
    assert "1 more day(s) still within the reporting lag" in panel.line()


def test_test_conversions_are_left_out_of_what_adsync_sent(connected, check, site, make_conversion):
    send_through_emulator(connected, site, make_conversion, 3, days_ago(3))
    Conversion.objects.filter(pk=Push.objects.order_by("id").first().conversion_id).update(
        source=Conversion.SOURCE_ADMIN)

    panel, = reconciliation.panels(connected)

    assert next(d for d in panel.days if d.day == days_ago(3)).sent == 2


def test_the_reconciliation_page_renders_from_stored_rows_without_calling_microsoft(
        connected, check, site, make_conversion, admin_client):
    send_through_emulator(connected, site, make_conversion, 12, days_ago(3))
    EmulatorConversion.objects.filter(id__in=list(EmulatorConversion.objects.values_list("id", flat=True)[:4])).update(
        retracted=True)
    check(connected)

    with responses_lib.RequestsMock():  # any HTTP call would fail the page
        page = admin_client.get(f"/admin/adsync/connection/{connected.pk}/reconciliation/")

    assert page.status_code == 200
    text = html.unescape(page.content.decode())
    assert "“Purchase”" in text and "Microsoft counts 33 % fewer conversions" in text
    assert f"<td>{days_ago(3):%Y-%m-%d}" in text
    assert "<td>12</td>\n      <td>8</td>\n      <td>-4</td>\n      <td>compared</td>" in text
    assert reconciliation.LAG_NOTE in text
