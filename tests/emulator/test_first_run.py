"""`python3 dev.py run` from a fresh clone and again after staff used the admin: idempotent seeding, one
admin login kept across restarts, the worker started after the web server answers, and a healthy card."""

from __future__ import annotations

import importlib.util
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path

import pytest
import requests
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.utils import timezone
from django_q.models import OrmQ, Schedule

from adsync import jobs
from adsync.connections import health
from adsync.models import Connection, GoalMapping, Site
from emulator.demo_site import DEMO_SITE_KEY
from tests.conftest import REPORTING, TOKEN_URL, run_queued_jobs

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def printed_password(output: str) -> str:
    line = next(line for line in output.splitlines() if "password:" in line)
    return line.split("password:")[1].split()[0]


def test_seeding_again_after_staff_added_a_second_connection_changes_nothing(emulator_mode):
    seed()
    site = Site.objects.get(key=DEMO_SITE_KEY)
    second = Connection.objects.create(site=site, account_name="Another account")
    first = site.connections.exclude(pk=second.pk).get()
    GoalMapping.objects.filter(connection=first, event_name="purchase").update(goal_name="Purchase (renamed)")
    Connection.objects.filter(pk=first.pk).update(status=Connection.DISCONNECTED, refresh_token="")

    seed()

    assert site.connections.count() == 2
    again = Connection.objects.get(pk=first.pk)
    assert (again.status, again.refresh_token) == (Connection.DISCONNECTED, "")  # staff's Disconnect stands
    assert first.goal_mappings.get(event_name="purchase").goal_name == "Purchase (renamed)"


def test_the_admin_password_is_printed_once_kept_across_restarts_and_reset_on_request(emulator_mode):
    first = seed()
    password = printed_password(first)

    second = seed()

    assert "password:" not in second and "--reset-admin" in second
    assert authenticate(username="admin", password=password) is not None
    reset = printed_password(seed("--reset-admin"))
    assert reset != password
    assert authenticate(username="admin", password=password) is None
    assert authenticate(username="admin", password=reset) is not None


def test_seeding_queues_the_demo_connections_goals_and_insights(emulator_mode, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        seed()

    connection = Site.objects.get(key=DEMO_SITE_KEY).connections.get()
    assert [(task.func(), task.args()) for task in OrmQ.objects.all()] == [
        ("adsync.jobs.connection_ready", (connection.pk,))]


# --- The worker starts after the web server answers ---------------------------------------------------

def load_dev():
    spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dev_py_waits_for_the_web_server_to_answer_before_the_worker_starts():
    dev = load_dev()

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    port = server.server_address[1]
    server.server_close()  # the port is known, nothing listens yet
    listening_at = []

    def listen_later():
        time.sleep(1.0)
        late = ThreadingHTTPServer(("127.0.0.1", port), Answer)
        listening_at.append(time.monotonic())
        late.serve_forever()
        listening_at.append(late)

    threading.Thread(target=listen_later, daemon=True).start()
    started = time.monotonic()
    answered = dev.wait_for_server(f"http://127.0.0.1:{port}/", timeout=20)
    returned = time.monotonic()

    assert answered and returned >= listening_at[0] and returned - started >= 1.0


def test_dev_py_gives_up_waiting_when_the_server_process_ends():
    dev = load_dev()

    class Ended:
        def poll(self):
            return 1

    assert dev.wait_for_server("http://127.0.0.1:9/", Ended(), timeout=5) is False


# --- A failed insights sync retries within minutes ----------------------------------------------------

def test_a_failed_insights_sync_is_retried_with_backoff_within_minutes(mocked, site, make_connection,
                                                                      django_capture_on_commit_callbacks):
    connection = make_connection(site, token_expires_at=timezone.now() - timedelta(minutes=1))
    mocked.post(TOKEN_URL, body=requests.ConnectionError("Connection refused"))  # the emulator not up yet

    with django_capture_on_commit_callbacks(execute=True):
        line = jobs.sync_insights(connection.pk)

    retry = Schedule.objects.get(name=f"adsync:insights-retry:{connection.pk}")
    assert "retry 1 of 5 in 1 min" in line
    assert (retry.func, retry.schedule_type, retry.args) == ("adsync.jobs.sync_insights", Schedule.ONCE,
                                                             repr((connection.pk, 14, 1)))
    assert timedelta(seconds=50) < retry.next_run - timezone.now() < timedelta(seconds=70)
    state = health.card_state(Connection.objects.get(pk=connection.pk))
    assert state.label == "Insights sync failing (adsync retries)" and state.fix == health.RESYNC

    with django_capture_on_commit_callbacks(execute=True):
        jobs.sync_insights(connection.pk, 14, 3)
    assert timedelta(minutes=7) < Schedule.objects.get(name=retry.name).next_run - timezone.now() < timedelta(minutes=9)
    assert Schedule.objects.filter(name=retry.name).count() == 1

    with django_capture_on_commit_callbacks(execute=True):
        assert "retry" not in jobs.sync_insights(connection.pk, 14, 5)  # the fifth retry was the last


def test_an_insights_failure_a_retry_cannot_cure_is_not_retried(mocked, site, make_connection,
                                                                 django_capture_on_commit_callbacks):
    connection = make_connection(site)
    mocked.post(REPORTING + "/Reporting/v13/GenerateReport/Submit", status=403, json={
        "Type": "AdApiFaultDetail", "Errors": [{"Code": 106, "ErrorCode": "UserIsNotAuthorized",
                                                "Message": "The user is not authorized to perform this action."}]})

    with django_capture_on_commit_callbacks(execute=True):
        line = jobs.sync_insights(connection.pk)

    assert "failed" in line and "retry" not in line and not Schedule.objects.exists()


# --- The first start: a healthy card ---------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_the_first_start_shows_a_healthy_card(live_server, settings, django_capture_on_commit_callbacks):
    """seed_demo, then the worker (started once the web server answers) runs what seeding queued."""
    base = live_server.url + "/emulator"
    settings.MICROSOFT_ADS_ENVIRONMENT = "emulator"
    settings.MICROSOFT_ADS_CAMPAIGN_API_URL = base + "/campaign"
    settings.MICROSOFT_ADS_REPORTING_API_URL = base + "/reporting"
    settings.MICROSOFT_ADS_OAUTH_TOKEN_URL = base + "/oauth2/v2.0/token"
    settings.MICROSOFT_ADS_CLIENT_ID = "adsync-emulator-client"
    settings.MICROSOFT_ADS_CLIENT_SECRET = "adsync-emulator-secret"
    from emulator.models import EmulatorBehaviour

    EmulatorBehaviour.load()
    EmulatorBehaviour.objects.update(report_pending_polls=0)

    with django_capture_on_commit_callbacks(execute=True):
        seed()
        lines = run_queued_jobs()

    connection = Site.objects.get(key=DEMO_SITE_KEY).connections.get()
    assert health.card_state(connection) == health.ACTIVE, (lines, connection.last_error)
    assert connection.goals_refreshed_at is not None and connection.last_insights_sync_at is not None
