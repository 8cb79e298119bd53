#!/usr/bin/env python
"""End-to-end benchmark: snippet hit → stored → sent, at fixed rates, as production runs.

Everything is a separate process on this machine, started the way the README's production
section says: gunicorn with gunicorn.conf.py (gevent, one process per core), `manage.py qcluster`
with the schedules `setup_schedules` writes (the inbox drained every minute, the flush every 2),
PostgreSQL, and a zero-latency Microsoft stand-in (a loopback HTTP server in this process that
records what it receives; bench/faultkit.py). For each --rate, wrk sends the snippet's conversion
hits (a new visitor, msclkid and order id each) for --duration seconds, each of its connections
pausing between requests so that together they offer that rate; this process samples the inbox's
backlog every second, then waits until every accepted hit is stored and sent. It prints per rate:

- the rate offered and the rate accepted (2xx answers per second), and the hits' p50/p99 answer time;
- the backlog: its peak, and whether the drain caught up (the backlog back to nearly empty) in
  the last minute of traffic: at a rate the worker cannot follow, it never does after the first;
- hit → stored and hit → sent latency, p50 and p99 (from the conversion's time, which is the
  hit's receipt time truncated to the second, to the row's creation and the push's sent_at).

And at the end the highest rate at which the backlog stayed bounded. Not a test: it measures.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/adsync_bench_e2e .venv/bin/python bench/e2e_bench.py \\
        --rate 500 --rate 1000 --rate 2000 --duration 150

--duration of at least 120 s spans two drain cycles (the minute schedule). The database is created
if missing and emptied: never point it at a database you care about. Needs wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import faultkit  # noqa: E402  (needs the project root on the path)

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/adsync_bench_e2e"
SITE_KEY = "pk_e2ebench"
ORIGIN = "https://shop.example.com"

# Each connection waits `pause` ms before each request: connections / (pause + answer time) ≈ the rate.
LUA = r"""
local counter = 0
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
function init(args)
  run = args[1]
  pause = tonumber(args[2])
end
function delay()
  return pause
end
function request()
  counter = counter + 1
  local body = string.format(
    '{"site":"SITE_KEY","type":"conversion","event":"purchase","orderId":"%s-%d-%d",' ..
    '"msclkid":"%s%02x%014x","visitorId":"v%s%02x%014x","value":49.9,"currency":"USD"}',
    run, tid, counter, run, tid, counter, run, tid, counter)
  return wrk.format("POST", "/t/v1/collect", {["Content-Type"] = "text/plain;charset=UTF-8",
                                              ["Origin"] = "ORIGIN"}, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50": %d, "p99": %d, "errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
""".replace("SITE_KEY", SITE_KEY).replace("ORIGIN", ORIGIN)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare() -> None:
    from django.core.management import call_command

    faultkit.fresh_site("End to end", SITE_KEY, ORIGIN)
    call_command("setup_schedules", stdout=io.StringIO())


def stop(process: subprocess.Popen, group: bool) -> None:
    try:
        if group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)  # qcluster stops its own processes
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    except ProcessLookupError:
        pass


def backlog() -> int:
    from django.db import connection

    with connection.cursor() as cursor:  # the dashboard's count, without its other columns
        cursor.execute("SELECT count(*) FROM tracking_hit WHERE error = ''")
        return cursor.fetchone()[0]


class Sampler(threading.Thread):
    """The inbox's backlog once a second: (seconds since start, waiting hits)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self.stopped = threading.Event()
        self.started = time.monotonic()

    def run(self) -> None:
        from django.db import connections

        while not self.stopped.wait(1.0):
            self.samples.append((time.monotonic() - self.started, backlog()))
        connections.close_all()


def run_wrk(port: int, script: Path, run_id: str, rate: float, args) -> dict:
    # Each connection pauses at most half a second: gunicorn closes a connection idle for 2 s (keepalive).
    connections = max(args.wrk_threads, min(args.connections, round(rate / 2)))
    pause_ms = round(connections * 1000 / rate)
    command = ["wrk", "-t", str(args.wrk_threads), "-c", str(connections), "-d", f"{args.duration:g}s",
               "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}", "--", run_id, str(pause_ms)]
    output = subprocess.run(command, capture_output=True, text=True, timeout=args.duration + 60, check=True).stdout
    result = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT ")).split(" ", 1)[1])
    result["seconds"] = result["duration_us"] / 1e6
    return result


def wait_until_sent(run_id: str, accepted: int, limit: float) -> tuple[bool, float]:
    """Until every hit of this run is stored and its push sent (or `limit` seconds); (done, seconds waited)."""
    from adsync.models import Push

    started = time.monotonic()
    while time.monotonic() - started < limit:
        if not backlog() and Push.objects.filter(conversion__order_id__startswith=f"{run_id}-", status=Push.SENT) \
                .count() >= accepted:
            return True, time.monotonic() - started
        time.sleep(2)
    return False, time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def latencies(run_id: str) -> dict[str, float]:
    """Seconds from each hit (its conversion time: the receipt time, truncated to the second) to stored and sent."""
    from adsync.models import Push

    rows = list(Push.objects.filter(conversion__order_id__startswith=f"{run_id}-")
                .values_list("conversion_time", "conversion__created_at", "sent_at"))
    stored = [(created - at).total_seconds() for at, created, _ in rows]
    sent = [(sent_at - at).total_seconds() for at, _, sent_at in rows if sent_at]
    return {"stored_p50": percentile(stored, 0.5), "stored_p99": percentile(stored, 0.99),
            "sent_p50": percentile(sent, 0.5), "sent_p99": percentile(sent, 0.99), "rows": len(rows)}


def one_rate(port: int, script: Path, rate: float, args) -> dict:
    run_id = f"r{int(rate)}x{int(time.time()) % 100000:05d}"
    sampler = Sampler()
    sampler.start()
    result = run_wrk(port, script, run_id, rate, args)
    sampler.stopped.set()
    sampler.join()
    accepted = result["requests"] - result["errors"]
    done, waited = wait_until_sent(run_id, accepted, args.settle)
    last_minute = [n for t, n in sampler.samples if t >= sampler.samples[-1][0] - 60] if sampler.samples else [0]
    caught_up = min(last_minute) <= max(100, rate * 2)  # nearly empty: at most 2 s of traffic waiting
    return {"rate": rate, "accepted_rate": accepted / result["seconds"], "accepted": accepted,
            "errors": result["errors"], "answer_p50_ms": result["p50"] / 1000, "answer_p99_ms": result["p99"] / 1000,
            "peak_backlog": max((n for _, n in sampler.samples), default=0), "caught_up": caught_up,
            "all_sent": done, "drained_after_s": waited, **latencies(run_id)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, action="append", help="hits/second offered (repeatable); "
                        "default 250, 500, 1000, 2000, 3000, 4000")
    parser.add_argument("--duration", type=float, default=150, help="seconds of traffic per rate, default 150")
    parser.add_argument("--connections", type=int, default=256,
                        help="wrk connections at most (fewer at low rates, each pausing ≤ 0.5 s), default 256")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads, default 2")
    parser.add_argument("--q-workers", type=int, default=1, help="django-q workers (ADSYNC_Q_WORKERS), default 1")
    parser.add_argument("--settle", type=float, default=600, help="seconds to wait for a rate's hits to be sent")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")

    recorder = faultkit.Recorder()
    stand_in = faultkit.start_stand_in(recorder)
    faultkit.configure(os.environ.get("DATABASE_URL", DEFAULT_DB), stand_in, lease_seconds=300, batch_size=1000)
    from django.conf import settings
    from django.db import connections

    from adsync.conf import conf

    prepare()
    connections.close_all()
    load_before = os.getloadavg()
    port = free_port()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "e2e.lua"
        script.write_text(LUA)
        log = open(Path(tmp) / "processes.log", "ab")
        web = faultkit.start_gunicorn(port, log)
        worker = faultkit.start_cluster(args.q_workers, log)
        try:
            for rate in sorted(args.rate or [250, 500, 1000, 2000, 3000, 4000]):
                results.append(one_rate(port, script, rate, args))
                print_row(results[-1], first=len(results) == 1, header=header(args, conf, settings, load_before))
                if not results[-1]["caught_up"]:
                    break  # a higher rate cannot be followed either
        finally:
            stop(worker, group=False)
            stop(web, group=True)
            log.close()
    with recorder.lock:
        twice = len(recorder.items) - len({item[1] for item in recorder.items})
    bounded = [r for r in results if r["caught_up"] and r["all_sent"] and not r["errors"]]
    print(f"Microsoft received {len(recorder.items)} conversions ({twice} more than once) in {recorder.requests} "
          f"requests; load average after: {os.getloadavg()[0]:.1f}")
    best = max(bounded, key=lambda r: r["accepted_rate"], default=None)
    print(f"highest rate with the backlog bounded: {best['accepted_rate']:.0f} hits/s accepted "
          f"(offered {best['rate']:g})" if best else "the backlog grew at every rate tried")


def header(args, conf, settings, load) -> str:
    workers = os.environ.get("WEB_CONCURRENCY") or os.cpu_count()
    return (f"database: postgresql  cores: {os.cpu_count()}  gunicorn: {workers} x gevent  worker: 1 qcluster x "
            f"{args.q_workers} (broker: {conf.task_broker}, drainers: {conf.inbox_drainers})  wrk: "
            f"{args.connections} connections, {args.duration:g} s per rate  load average before: "
            f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


def print_row(r: dict, *, first: bool, header: str) -> None:
    if first:
        print(header)
        print(f"{'offered':>8} {'accepted':>8} {'errors':>6} {'ans p50':>8} {'ans p99':>8} {'peak backlog':>12} "
              f"{'bounded':>7} {'stored p50':>10} {'stored p99':>10} {'sent p50':>8} {'sent p99':>8}")
    print(f"{r['rate']:>8g} {r['accepted_rate']:>8.0f} {r['errors']:>6} {r['answer_p50_ms']:>7.1f}m "
          f"{r['answer_p99_ms']:>7.1f}m {r['peak_backlog']:>12} {'yes' if r['caught_up'] else 'NO':>7} "
          f"{r['stored_p50']:>9.1f}s {r['stored_p99']:>9.1f}s {r['sent_p50']:>7.1f}s {r['sent_p99']:>7.1f}s"
          + ("" if r["all_sent"] else f"  (not all sent after {r['drained_after_s']:.0f} s)"), flush=True)


if __name__ == "__main__":
    main()
