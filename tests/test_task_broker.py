"""django-q2's broker, really exercised: a job queued with `jobs.enqueue()` waits in the broker the
settings chose (the database, or Redis when REDIS_URL is set) until a real worker, `manage.py
qcluster` in a process of its own, takes it and runs it.

Marked `broker`: CI runs the whole suite with the database broker, then these tests again with
REDIS_URL set (.ci/run). The worker is another process, so it needs the test database on
PostgreSQL (SQLite's lives in the test process's memory).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.db import connection as db_connection
from django.db import connections
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import OrmQ, Success

from adsync import jobs
from adsync.conf import conf
from adsync.models import Conversion, Hit, Push
from adsync.models.inbox import lane_of
from tests.servers import TEST_SECRET_KEY, production_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.broker


def _broker_in_a_fresh_process(**env) -> str:
    script = ("import django; django.setup(); from django_q.brokers import get_broker; "
              "print(type(get_broker()).__name__)")
    clean = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    clean.update(DJANGO_SETTINGS_MODULE="config.settings", DATABASE_URL="sqlite://:memory:")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**clean, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_redis_url_selects_the_redis_broker_and_without_it_jobs_wait_in_the_database():
    assert _broker_in_a_fresh_process() == "ORM"
    assert _broker_in_a_fresh_process(REDIS_URL="redis://127.0.0.1:6379/9") == "Redis"


def worker_database_url() -> str:
    """The test database, for a process of its own."""
    db = db_connection.settings_dict
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """`manage.py qcluster` on the test database, as production runs it; stopped with SIGTERM."""

    def __init__(self):
        self.log = tempfile.NamedTemporaryFile(prefix="qcluster-", suffix=".log")
        env = production_env("broker-worker", DATABASE_URL=worker_database_url(), ADSYNC_Q_WORKERS="1")
        self.process = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        try:
            self.process.send_signal(signal.SIGTERM)  # to qcluster only: it stops its own processes
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.log.close()


def wait_for(predicate, worker: Worker, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        assert worker.process.poll() is None, f"the worker exited:\n{worker.output()}"
        time.sleep(0.2)
    raise AssertionError(f"nothing after {seconds} s; the worker said:\n{worker.output()}")


@pytest.mark.skipif(db_connection.vendor != "postgresql", reason="the worker process needs a shared database")
@pytest.mark.django_db(transaction=True)
def test_a_queued_job_waits_in_the_broker_until_a_worker_process_runs_it(site, connection, monkeypatch):
    # Jobs are signed with SECRET_KEY; the worker runs in production mode, which refuses the repository's key.
    monkeypatch.setattr(Conf, "SECRET_KEY", TEST_SECRET_KEY)
    Hit.objects.create(site=site, kind=Hit.CONVERSION, lane=lane_of("v1"), payload={
        "event": "purchase", "order_id": "A-1", "value": "10.000", "currency": "USD", "occurred_at": None,
        "msclkid": "clk-1", "visitor_id": "v1", "hashed_email": "", "hashed_phone": ""})
    broker = get_broker()
    broker.purge_queue()
    try:
        jobs.enqueue(jobs.drain_inbox_helper)  # outside a transaction: queued at once

        # It waits in the broker the settings chose, and only there.
        assert type(broker).__name__ == {"orm": "ORM", "redis": "Redis"}[conf.task_broker]
        assert broker.queue_size() == 1
        assert OrmQ.objects.count() == (1 if conf.task_broker == "orm" else 0)
        assert Hit.objects.count() == 1 and not Conversion.objects.exists()

        worker = Worker()
        try:
            wait_for(lambda: Success.objects.filter(func="adsync.jobs.drain_inbox_helper").first(), worker)
        finally:
            worker.stop()
    finally:
        broker.purge_queue()
        connections.close_all()

    task = Success.objects.get()
    assert task.result == "inbox: 1 stored, 0 failed"  # the task log staff read in the admin
    assert Conversion.objects.get().order_id == "A-1" and Push.objects.count() == 1
    assert not Hit.objects.exists() and broker.queue_size() == 0
