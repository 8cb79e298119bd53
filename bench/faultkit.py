"""Shared parts of the fault scripts (bench/fault_kill9.py, bench/fault_two_workers.py).

- a recording Microsoft stand-in: a loopback HTTP server that answers ApplyOfflineConversions
  with success and remembers every conversion it received (goal, msclkid, ConversionTime), in
  arrival order, only once the whole request body has arrived (a client killed mid-request
  sent nothing Microsoft could apply);
- the environment every process of a run shares (the parent and the flush workers it spawns);
- queueing a large backlog, spawning flush workers (bench/fault_worker.py), and the checks
  that decide pass or fail.

Not imported by the application. PostgreSQL only: the point is concurrent processes.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench import benchdb

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "bench" / "fault_worker.py"
APPLY_PATH = "/CampaignManagement/v13/OfflineConversions/Apply"


class Recorder:
    """What the stand-in received: (ConversionName, MicrosoftClickId, ConversionTime) per item."""

    def __init__(self, latency: tuple[float, float] = (0.0, 0.0)):
        self.lock = threading.Lock()
        self.items: list[tuple[str, str, str]] = []
        self.requests = 0
        self.cut_off = 0  # requests whose client died before the whole body arrived
        self.latency = latency

    def record(self, conversions: list[dict]) -> None:
        with self.lock:
            self.requests += 1
            self.items.extend((c["ConversionName"], c.get("MicrosoftClickId", ""), c["ConversionTime"])
                              for c in conversions)


def start_stand_in(recorder: Recorder) -> str:
    """Serve the recording stand-in on a free loopback port; returns its base URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            if len(raw) < length:
                with recorder.lock:
                    recorder.cut_off += 1
                return
            if self.path != APPLY_PATH:
                self.send_error(404)
                return
            # Applied first, answered second: a worker killed between the two leaves Microsoft
            # holding conversions its row still calls queued, the case the lease re-send must survive.
            recorder.record(json.loads(raw)["OfflineConversions"])
            time.sleep(random.uniform(*recorder.latency))
            body = b'{"PartialErrors": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("TrackingId", "fault-stand-in")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            if not isinstance(sys.exc_info()[1], ConnectionError):  # a killed worker hung up: expected
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def bench_secrets() -> dict[str, str]:
    """A SECRET_KEY and ADSYNC_ENCRYPTION_KEY of the run's own: production mode refuses the repository's defaults."""
    import secrets

    from cryptography.fernet import Fernet

    return {"SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
            "ADSYNC_ENCRYPTION_KEY": os.environ.get("ADSYNC_ENCRYPTION_KEY") or Fernet.generate_key().decode()}


def configure(database_url: str, stand_in: str, *, lease_seconds: int, batch_size: int) -> None:
    """Environment for this process and every worker it spawns, then django.setup()."""
    os.environ.update({
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "false",
        **bench_secrets(),  # production refuses to start without keys of its own
        "MICROSOFT_ADS_ENVIRONMENT": "production",
        "MICROSOFT_ADS_CAMPAIGN_API_URL": stand_in,
        "MICROSOFT_ADS_OAUTH_TOKEN_URL": stand_in + "/token",  # never called: the token is fresh
        "MICROSOFT_ADS_BATCH_SIZE": str(batch_size),
        "MICROSOFT_ADS_TIMEOUT": "10",
        "ADSYNC_CLAIM_LEASE_SECONDS": str(lease_seconds),
        "ADSYNC_REQUESTS_PER_MINUTE": "1000000",
        "ADSYNC_CLICK_HOLD_MINUTES": "0",
        "ADSYNC_ALERT_ERROR_THRESHOLD": "1000000000",
        "ADSYNC_LOG_LEVEL": "WARNING",
        # Every hit comes from 127.0.0.1 to one site: the snippet's rate limits and inbox cap (tracking/limits.py)
        # would answer 429/503 to the load itself, not to a flood.
        "ADSYNC_CLIENT_HITS_PER_MINUTE": "1000000000",
        "ADSYNC_SITE_HITS_PER_MINUTE": "1000000000",
        "ADSYNC_INBOX_CAP": "1000000000",
    })
    ensure_database(database_url)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def ensure_database(url: str) -> None:
    if not url.startswith("postgres"):
        raise SystemExit("the fault scripts need PostgreSQL (DATABASE_URL=postgres://…)")
    benchdb.ensure_database(url)


def queue_backlog(rows: int) -> int:
    """Empty the adsync tables; one site, one active connection, `rows` queued pushes. Returns the connection id."""
    from django.db import connection as db
    from django.utils import timezone

    from adsync.models import Connection, Conversion, GoalMapping, Push, Site

    with db.cursor() as cursor:
        tables = [m._meta.db_table for m in (Push, Conversion, GoalMapping, Connection, Site)]
        cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    site = Site.objects.create(name="Fault", key="pk_fault")
    conn = Connection.objects.create(
        site=site, status=Connection.ACTIVE, customer_id="1", account_id="2", access_token="fault-access",
        refresh_token="fault-refresh", token_expires_at=timezone.now() + timedelta(days=1))
    GoalMapping.objects.create(connection=conn, event_name="purchase", goal_name="Purchase")
    when = timezone.now().replace(microsecond=0) - timedelta(hours=3)
    for start in range(0, rows, 10_000):
        size = min(10_000, rows - start)
        conversions = Conversion.objects.bulk_create(
            Conversion(site=site, event_name="purchase", order_id=f"f{start + i}", value=10, currency="USD",
                       msclkid=f"{start + i:032x}", occurred_at=when - timedelta(seconds=start + i))
            for i in range(size))
        pushes = [Push(conversion=c, connection=conn, goal_name="Purchase", msclkid=c.msclkid, value=c.value,
                       currency="USD", conversion_time=c.occurred_at) for c in conversions]
        for push in pushes:
            push.dedupe_key = push.compute_dedupe_key()
        Push.objects.bulk_create(pushes)
    return conn.pk


def spawn_worker(mode: str, log_path: Path) -> subprocess.Popen:
    """A flush worker in its own process (bench/fault_worker.py): `loop` flushes until killed,
    `drain` until nothing is queued or claimed. It prints "ready" once Django is set up and
    waits for a line on stdin before its first flush, so several can start at the same moment."""
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, str(WORKER), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=log, env=os.environ.copy(), cwd=str(ROOT))


def wait_ready(worker: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    line = worker.stdout.readline()
    if line.strip() != b"ready" or time.monotonic() > deadline:
        raise SystemExit(f"a flush worker did not start (said {line!r}); see its log")


def go(worker: subprocess.Popen) -> None:
    worker.stdin.write(b"go\n")
    worker.stdin.flush()


@dataclass
class Verdict:
    """The end state, compared with what the stand-in received."""

    rows: int = 0
    statuses: Counter = field(default_factory=Counter)
    received: int = 0
    requests: int = 0
    cut_off: int = 0
    duplicates: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def check(expected_rows: int, recorder: Recorder, *, allow_duplicates: bool) -> Verdict:
    """Every row sent or queued, none lost; Microsoft got every sent row; a duplicate repeats the first exactly."""
    from adsync.models import Push, format_conversion_time

    verdict = Verdict()
    rows = {p["msclkid"]: p for p in Push.objects.values("msclkid", "goal_name", "conversion_time", "status")}
    verdict.rows = len(rows)
    verdict.statuses = Counter(p["status"] for p in rows.values())
    with recorder.lock:
        items, verdict.requests, verdict.cut_off = list(recorder.items), recorder.requests, recorder.cut_off
    verdict.received = len(items)
    by_click: dict[str, list[tuple]] = defaultdict(list)
    for item in items:
        by_click[item[1]].append(item)
    verdict.duplicates = len(items) - len(by_click)
    problems = verdict.violations
    if verdict.rows != expected_rows or Push.objects.count() != expected_rows:
        problems.append(f"{expected_rows} rows queued, {verdict.rows} found: rows were lost or created")
    if set(verdict.statuses) - {Push.SENT, Push.QUEUED}:
        problems.append(f"rows ended in other states: {dict(verdict.statuses)}")
    for msclkid, got in by_click.items():
        row = rows.get(msclkid)
        expected = row and (row["goal_name"], msclkid, format_conversion_time(row["conversion_time"]))
        if any(item != expected for item in got):
            problems.append(f"{msclkid}: received {got}, the row says {expected}")
        if len(got) > 1 and not allow_duplicates:
            problems.append(f"{msclkid}: received {len(got)} times")
    never = [m for m, row in rows.items() if row["status"] == Push.SENT and m not in by_click]
    if never:
        problems.append(f"{len(never)} rows marked sent that Microsoft never received, e.g. {never[:3]}")
    return verdict


def print_verdict(verdict: Verdict, **extra) -> None:
    figures = {"rows": verdict.rows, **{k: verdict.statuses.get(k, 0) for k in ("sent", "queued")},
               "other states": verdict.rows - verdict.statuses.get("sent", 0) - verdict.statuses.get("queued", 0),
               "Apply requests": verdict.requests, "requests cut off": verdict.cut_off,
               "conversions received": verdict.received,
               "duplicates received": verdict.duplicates, **extra}
    for name, value in figures.items():
        print(f"  {name:<24} {value}")
    for problem in verdict.violations[:20]:
        print(f"  VIOLATION: {problem}")
    print("PASS" if verdict.ok else f"FAIL ({len(verdict.violations)} violation(s))")


def fresh_site(name: str, key: str, origin: str) -> None:
    """Empty adsync's tables and the job queue, then one site with an active connection mapping purchase → Purchase
    (its tokens fresh for a week: the stand-in is never asked for one)."""
    from django.db import connection
    from django.utils import timezone

    from adsync.models import Click, Connection, Conversion, GoalMapping, Hit, Push, Site

    with connection.cursor() as cursor:
        tables = [m._meta.db_table for m in (Push, Conversion, Click, Hit, GoalMapping, Connection, Site)]
        cursor.execute(f"TRUNCATE {', '.join(tables)}, django_q_ormq, django_q_task RESTART IDENTITY CASCADE")
    site = Site.objects.create(name=name, key=key, allowed_origins=origin)
    conn = Connection.objects.create(
        site=site, status=Connection.ACTIVE, customer_id="1", account_id="2", access_token="bench-access",
        refresh_token="bench-refresh", token_expires_at=timezone.now() + timezone.timedelta(days=7))
    GoalMapping.objects.create(connection=conn, event_name="purchase", goal_name="Purchase")


def start_gunicorn(port: int, log, **env: str) -> subprocess.Popen:
    """`gunicorn config.wsgi` from the project root (it reads gunicorn.conf.py, as in production), once it
    serves the snippet; `env` adds to this process's environment (WEB_CONCURRENCY...)."""
    import http.client

    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind",
                                f"127.0.0.1:{port}", "--log-level", "warning"], cwd=ROOT,
                               env={**os.environ, **env}, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/t/v1/adsync.js")
            conn.getresponse().read()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gunicorn on port {port} did not start; see its log") from None
            time.sleep(0.2)


def start_cluster(workers: int, log) -> subprocess.Popen:
    """`manage.py qcluster` with `workers` django-q workers, a session of its own."""
    env = {**os.environ, "ADSYNC_Q_WORKERS": str(workers), "ADSYNC_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=log, stderr=log,
                            start_new_session=True)
