"""Fixtures of the diagnosis tests: the built-in emulator over real HTTP (live_server) and a card connected to it."""

from __future__ import annotations

import gc
from datetime import timedelta

import pytest
from django.utils import timezone

from adsync.diagnosis.run import diagnose
from adsync.models import Connection, DiagnosisRun, GoalMapping
from emulator.demo import ensure_demo_data
from tests.emulator.support import point_adsync_at


def no_sleep(_seconds: float) -> None:
    """Report polls wait in production; a test need not."""


@pytest.fixture
def live(live_server, settings):
    settings.MICROSOFT_ADS_ENVIRONMENT = "emulator"
    settings.ADSYNC_CLICK_HOLD_MINUTES = 0
    point_adsync_at(live_server, settings)
    yield live_server
    gc.collect()   # see docs/emulator.md, "Using it in tests"


@pytest.fixture
def demo(live):
    return ensure_demo_data()


@pytest.fixture
def connected(demo, site):
    """The site's card connected to the emulator's Demo Store (Super Admin), purchase → "Purchase",
    flushed and synced a minute ago: what a test breaks is the only problem."""
    conn = Connection.objects.create(
        site=site, status=Connection.ACTIVE, customer_id=demo.customer_id, account_id=demo.account_id,
        account_name=demo.account_name, refresh_token=demo.refresh_token,
        last_flush_at=timezone.now() - timedelta(minutes=1), last_insights_sync_at=timezone.now() - timedelta(hours=1))
    GoalMapping.objects.create(connection=conn, event_name="purchase", goal_name="Purchase")
    return conn


@pytest.fixture
def check():
    """Run the whole checklist against the emulator and return the run (stored, as the job would)."""
    def run(conn: Connection, trigger: str = DiagnosisRun.COMMAND) -> DiagnosisRun:
        return diagnose(Connection.objects.select_related("site").get(pk=conn.pk), trigger=trigger, sleep=no_sleep)
    return run
