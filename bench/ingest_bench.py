#!/usr/bin/env python
"""Ingest benchmark: conversion hits/second and p50/p99 latency through gunicorn, beside a bare view.

Starts gunicorn on loopback with the production gunicorn.conf.py (threaded workers) and
bench/ingest_settings.py (the project's settings plus bench-only reference views), then drives
four URLs with wrk in the same run:

- bare:    POST /bench/bare: routing, middleware, body read, a JSON answer; no database;
- roundtrip: POST /bench/roundtrip: the bare view plus one `SELECT 1` in the request;
- validate: POST /bench/validate: everything /t/v1/collect does (its short path past the staff
           middleware, parsing, validation, the site's origin check, the 202 answer) except
           writing the hit: what collect costs without its durable write;
- collect: POST /t/v1/collect with a valid conversion body (unique orderId and msclkid per
           request, the Origin of an allowed origin), exactly what the snippet sends.

Closed loop (wrk, each client sends again as soon as it is answered), then open loop (64 client
threads sharing a fixed schedule of N requests/second, latency counted from each request's due
time). It prints requests/second, p50/p90/p99 latency and non-2xx answers for each, the ratio
collect/bare; then drains the inbox as the worker does (adsync/intake/inbox.py: the endpoint answers
202 once its hit is committed), prints how fast, and checks that every 2xx hit stored one conversion and
one push.
Not a test: it measures. Needs `wrk` (Debian: apt-get install wrk).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/adsync_bench_ingest \\
        .venv/bin/python bench/ingest_bench.py --connections 64 --duration 15

The database is created if missing and migrated; the bench site's rows are deleted first, so
never point it at a database you care about.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.benchdb import ensure_database  # noqa: E402  (needs the project root on the path)

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/adsync_bench_ingest"
SITE_KEY = "pk_benchingest"
ORIGIN = "https://shop.example.com"

# One Lua state per wrk thread: `tid` is set by setup(), so orderIds never collide across threads.
LUA = r"""
PATHS = {bare = "/bench/bare", roundtrip = "/bench/roundtrip", validate = "/bench/validate",
         collect = "/t/v1/collect"}
local threads = {}
local counter = 0
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
function init(args)
  run = args[1]
  mode = args[2]
end
function request()
  counter = counter + 1
  local body = string.format(
    '{"site":"%s","type":"conversion","event":"purchase","orderId":"%s-%d-%d",' ..
    '"msclkid":"%s%02x%014x","visitorId":"v%s%02x%014x","value":49.9,"currency":"USD"}',
    "SITE_KEY", run, tid, counter, run, tid, counter, run, tid, counter)
  local path = PATHS[mode]
  return wrk.format("POST", path, {["Content-Type"] = "text/plain;charset=UTF-8",
                                   ["Origin"] = "ORIGIN"}, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %f, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
""".replace("SITE_KEY", SITE_KEY).replace("ORIGIN", ORIGIN)


def prepare_database(history: int) -> None:
    """Migrate; give the bench site one active connection mapping `purchase` (one push per hit) and
    `history` earlier conversions over the last 30 days, so lookups run against a table of a busy site."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from adsync.models import Connection, Conversion, GoalMapping, Hit, Site

    call_command("migrate", verbosity=0)
    site, _ = Site.objects.update_or_create(key=SITE_KEY, defaults={"name": "Ingest bench", "allowed_origins": ORIGIN})
    Hit.objects.filter(site=site).delete()
    Connection.objects.filter(site=site).delete()
    empty_tables(site, keep_history=True)
    if Conversion.objects.filter(site=site).count() != history:
        empty_tables(site, keep_history=False)
        fill_history(site, history)
    connection = Connection.objects.create(
        site=site, status=Connection.ACTIVE, customer_id="1", account_id="2",
        token_expires_at=timezone.now() + timezone.timedelta(days=1))
    GoalMapping.objects.create(connection=connection, event_name="purchase", goal_name="Purchase")


def empty_tables(site, keep_history: bool) -> None:
    """The bench site's conversions (but its history, if kept) and their sync-log rows and clicks, deleted in SQL:
    Django's cascade would load every row first. Emptied tables are TRUNCATEd, so the planner never sees
    an empty table over pages of dead rows (adsync/models/planner.py)."""
    from django.db import connection

    from adsync.models import Conversion

    if connection.vendor != "postgresql":
        rows = Conversion.objects.filter(site=site)
        (rows.exclude(order_id__startswith="hist-") if keep_history else rows).delete()
        return
    with connection.cursor() as cursor:
        if not keep_history:
            cursor.execute("TRUNCATE adsync_push, adsync_conversion, adsync_click CASCADE")  # and rows referring to them
            return
        # The history has no sync-log rows, so they all go. Not with DELETE: the sync log has no full index on
        # its conversion column (two partial ones serve adsync's queries), so every deleted conversion's
        # foreign-key check would then read the whole table, dead rows included (minutes for 100,000).
        cursor.execute("TRUNCATE adsync_push, adsync_adjustment")
        doomed = "SELECT id FROM adsync_conversion WHERE site_id = %s AND order_id NOT LIKE 'hist-%%'"
        cursor.execute(f"DELETE FROM adsync_conversion WHERE id IN ({doomed})", [site.pk])
        cursor.execute("DELETE FROM adsync_click WHERE site_id = %s", [site.pk])


def fill_history(site, rows: int) -> None:
    """`rows` conversions spread over 30 days, one in 20 still waiting for a click (no msclkid)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO adsync_conversion (site_id, event_name, order_id, value, currency, occurred_at, visitor_id,"
            " msclkid, hashed_email, hashed_phone, source, consent, created_at, idempotency_key)"
            " SELECT %s, 'purchase', 'hist-' || g, 10, 'USD', now() - make_interval(secs => g * 2592000.0 / %s),"
            " md5('v' || g), CASE WHEN g %% 20 = 0 THEN '' ELSE md5('c' || g) END, '', '', 'browser', '', now(), ''"
            " FROM generate_series(1, %s) g", [site.pk, max(rows, 1), rows])
        cursor.execute("ANALYZE adsync_conversion")


def stored_counts() -> tuple[int, int]:
    from adsync.models import Conversion, Push

    return (Conversion.objects.filter(site__key=SITE_KEY).exclude(order_id__startswith="hist-").count(),
            Push.objects.filter(conversion__site__key=SITE_KEY).count())


def settle(seconds: float = 3.0) -> None:
    """Let the previous run's queued requests drain, so they do not land in the next run's figures."""
    time.sleep(seconds)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(port: int, args) -> subprocess.Popen:
    """The production configuration (gunicorn.conf.py), with the overrides given on our command line."""
    command = [str(ROOT / ".venv" / "bin" / "gunicorn"), "config.wsgi:application", "--chdir", str(ROOT),
               "--config", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}", "--log-level", "warning"]
    for option, value in (("--workers", args.workers), ("--worker-class", args.worker_class),
                          ("--threads", args.threads)):
        if value is not None:
            command += [option, str(value)]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.ingest_settings"}
    process = subprocess.Popen(command, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/bench/bare", data=b"{}", method="POST")
            with urllib.request.urlopen(request, timeout=2) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    stop(process)
    raise SystemExit("gunicorn did not answer within 30 s")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the gunicorn master we started (its own process group), then wait for it."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


def run_wrk(port: int, script: Path, mode: str, run_id: str, args, duration: float) -> dict:
    settle()
    command = ["wrk", "-t", str(args.wrk_threads), "-c", str(args.connections), "-d", f"{duration:g}s",
               "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}", "--", run_id, mode]
    output = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    return result


def open_loop(port: int, mode: str, run_id: str, rate: float, clients: int, duration: float) -> dict:
    """`clients` threads share a fixed schedule of `rate` requests/second (request i is due at
    i / rate). Latency counts from the due time, so a server that falls behind is charged for
    the queueing it causes (no coordinated omission), unlike a closed loop."""
    import http.client
    import threading

    settle()
    total = int(rate * duration)
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    start = time.perf_counter() + 0.5
    path = "/bench/bare" if mode == "bare" else "/t/v1/collect"

    def client(k: int) -> None:
        for i in range(k, total, clients):
            due = start + i / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            body = json.dumps({"site": SITE_KEY, "type": "conversion", "event": "purchase",
                               "orderId": f"{run_id}-open-{i}", "msclkid": f"{run_id}{i:026x}",
                               "visitorId": f"v{run_id}{i}", "value": 49.9, "currency": "USD"})
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("POST", path, body, {"Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN})
                ok = 200 <= conn.getresponse().status < 300
            except OSError:
                ok = False
            finally:
                conn.close()
            with lock:
                latencies.append(time.perf_counter() - due)
                failures[0] += not ok

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6  # noqa: E731  (µs, like wrk)
    return {"requests": total, "rps": total / duration, "p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99),
            "max": ordered[-1] * 1e6, "errors": failures[0]}


def print_row(label: str, r: dict) -> None:
    print(f"{label:<14} {r['requests']:>8} {r['rps']:>9.0f} {r['p50'] / 1000:>8.1f} {r['p90'] / 1000:>8.1f} "
          f"{r['p99'] / 1000:>8.1f} {r['max'] / 1000:>8.1f} {r['errors']:>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=64, help="concurrent clients (wrk -c), default 64")
    parser.add_argument("--duration", type=float, default=15, help="seconds per measured run, default 15")
    parser.add_argument("--rounds", type=int, default=2, help="bare/roundtrip/collect triples, alternated; default 2")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: gunicorn.conf.py's)")
    parser.add_argument("--worker-class", help="gunicorn worker class (default: gunicorn.conf.py's, gevent)")
    parser.add_argument("--threads", type=int, help="threads per gunicorn worker (default: gunicorn.conf.py's)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads, default 2")
    parser.add_argument("--rate", type=float, action="append",
                        help="also run open-loop at this many requests/second from --connections clients "
                             "(repeatable); default 40 and 60")
    parser.add_argument("--history", type=int, default=1_000_000,
                        help="earlier conversions of the bench site (last 30 days), default 1,000,000")
    args = parser.parse_args()
    production = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    args.workers = args.workers or production["workers"]
    args.worker_class = args.worker_class or production["worker_class"]
    args.threads = args.threads or production["threads"]
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")

    os.environ.setdefault("DATABASE_URL", DEFAULT_DB)
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.ingest_settings"
    ensure_database(os.environ["DATABASE_URL"])
    prepare_database(args.history)
    from django.conf import settings
    from django.db import connections

    connections.close_all()  # the bench process holds no connection while gunicorn runs

    load_before = os.getloadavg()[0]  # other work on the machine skews the figures: say how much
    port = free_port()
    server = start_gunicorn(port, args)
    try:
        warm, results, opened = run_all(port, args)
        commits = group_commits(port, args.workers)
    finally:
        stop(server)
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(f"database: {engine}  cores: {os.cpu_count()}  gunicorn: {args.workers} x {args.worker_class}"
          f"{f' ({args.threads} threads)' if args.worker_class == 'gthread' else ''}  wrk: {args.wrk_threads} threads, "
          f"{args.connections} connections, {args.duration:g} s x {args.rounds} rounds  "
          f"history: {args.history} conversions  load average before: {load_before:.1f}")
    report(results, opened, args)
    print(commits, flush=True)  # the drain below takes minutes after a long run
    check_stored([warm["collect"], *results["collect"]], opened, args.connections)


CLOSED_MODES = ("bare", "roundtrip", "validate", "collect")


def run_all(port: int, args) -> tuple[dict, dict, list]:
    """Warm-up, the closed-loop rounds (bare and collect alternated), then the open-loop rates."""
    run_id = f"{int(time.time()) % 0xFFFFFF:06x}"
    results: dict[str, list[dict]] = {mode: [] for mode in CLOSED_MODES}
    opened: list[tuple[str, float, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "ingest.lua"
        script.write_text(LUA)
        warm = {mode: run_wrk(port, script, mode, run_id + "w", args, 3) for mode in CLOSED_MODES}
        for round_ in range(args.rounds):
            for mode in CLOSED_MODES:
                results[mode].append(run_wrk(port, script, mode, f"{run_id}{round_:x}", args, args.duration))
    for rate in args.rate or [40.0, 60.0]:
        for mode in ("bare", "collect"):
            opened.append((mode, rate, open_loop(port, mode, f"{run_id}o{int(rate)}", rate, args.connections,
                                                 args.duration)))
    return warm, results, opened


def report(results: dict, opened: list, args) -> None:
    print(f"{'endpoint':<14} {'requests':>8} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'non-2xx':>7}")
    for mode in CLOSED_MODES:
        for r in results[mode]:
            print_row(mode, r)
    bare, roundtrip, validate, collect = (sum(r["rps"] for r in results[mode]) / args.rounds for mode in CLOSED_MODES)
    print(f"closed loop: ratio roundtrip/bare {roundtrip / bare:.0%} (one SELECT 1 in the request), "
          f"validate/bare {validate / bare:.0%} (collect without its write), "
          f"collect/validate {collect / validate:.0%} (the durable write)")
    worst_p99 = max(r["p99"] for r in results["collect"]) / 1000
    print(f"closed loop: ratio collect/bare {collect / bare:.0%} (target >= 70%), collect p99 (worst round) "
          f"{worst_p99:.1f} ms (target < 50 ms)")
    print(f"open loop, {args.connections} clients at a fixed total rate (latency from each request's due time):")
    for mode, rate, r in opened:
        print_row(f"{mode}@{rate:g}/s", r)


def group_commits(port: int, workers: int) -> str:
    """What the gunicorn processes' group-commit writers did (bench/ingest_urls.py's /bench/writer)."""
    seen: dict[int, dict] = {}
    for _ in range(workers * 20):  # each request lands on whichever process accepts it
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/writer", timeout=5) as answer:
            stats = json.load(answer)
        seen[stats["pid"]] = stats
        if len(seen) == workers:
            break
    rows, batches = sum(s["rows"] for s in seen.values()), sum(s["batches"] for s in seen.values())
    return (f"group commit: {rows} hits in {batches} commits ({rows / max(batches, 1):.1f} hits per commit) "
            f"in {len(seen)} of {workers} processes")


def check_stored(closed_runs: list[dict], opened: list, connections: int) -> None:
    """Drain the inbox as the worker does, then check every 2xx conversion hit stored one conversion and one push.

    wrk stops counting at its deadline: up to one in-flight request per connection per run is
    stored without being counted, so stored - answered lies in [0, connections x runs]."""
    from adsync.intake import inbox

    started = time.perf_counter()
    drained = inbox.drain()
    seconds = time.perf_counter() - started
    print(f"worker: {drained.line()} in {seconds:.1f} s ({drained.stored / seconds:.0f} hits/s, one process)")
    conversions, pushes = stored_counts()
    answered = sum(r["requests"] - r["errors"] for r in closed_runs)
    answered += sum(r["requests"] - r["errors"] for mode, _, r in opened if mode == "collect")
    in_flight = conversions - answered
    verdict = "ok" if conversions == pushes and 0 <= in_flight <= connections * len(closed_runs) else "MISMATCH"
    print(f"stored: {conversions} conversions, {pushes} pushes for {answered} 2xx collect answers "
          f"(+{in_flight} in flight at run ends): {verdict}")


if __name__ == "__main__":
    main()
