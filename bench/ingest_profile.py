#!/usr/bin/env python
"""Where a conversion hit's time goes: CPU per request of /t/v1/collect and of the bare view, in-process.

Runs both views through Django's test client (no HTTP server, one client), and prints per
request: wall time, this process's CPU time, the CPU and wall time spent inside the database
driver's execute, and the number of SQL queries. The remainder of the CPU time is Django (ORM
query building, model instances, middleware) and our own Python. Pair with bench/ingest_bench.py.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/adsync_bench_ingest .venv/bin/python bench/ingest_profile.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.ingest_bench import DEFAULT_DB, ORIGIN, SITE_KEY, ensure_database, prepare_database


class DriverTimer:
    """Counts queries and the time spent in CursorWrapper._execute (psycopg and PostgreSQL)."""

    def __init__(self):
        self.cpu = self.wall = 0.0
        self.queries = 0

    def __call__(self, execute, sql, params, many, context):
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.cpu += time.thread_time() - cpu
            self.wall += time.perf_counter() - wall
            self.queries += 1


def measure(client, path: str, requests: int, tag: str) -> dict:
    from django.db import connection

    timer = DriverTimer()
    cpu, wall = time.thread_time(), time.perf_counter()
    with connection.execute_wrapper(timer):
        for i in range(requests):
            body = json.dumps({"site": SITE_KEY, "type": "conversion", "event": "purchase",
                               "orderId": f"{tag}-{i}", "msclkid": f"{tag}{i:020x}", "visitorId": f"v{tag}{i}",
                               "value": 49.9, "currency": "USD"})
            response = client.post(path, body, content_type="text/plain", headers={"Origin": ORIGIN})
            assert response.status_code in (200, 202), response.content
    n = requests
    return {"wall": (time.perf_counter() - wall) / n * 1e3, "cpu": (time.thread_time() - cpu) / n * 1e3,
            "db_cpu": timer.cpu / n * 1e3, "db_wall": timer.wall / n * 1e3, "queries": timer.queries / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per measurement, default 500")
    parser.add_argument("--history", type=int, default=1_000_000, help="as in ingest_bench.py, default 1,000,000")
    args = parser.parse_args()
    os.environ.setdefault("DATABASE_URL", DEFAULT_DB)
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.ingest_settings"
    # One client, one thread: group commit would only move the insert to the writer thread, out of
    # this thread's CPU clock and the driver timer. Measure it where the request runs it.
    os.environ["ADSYNC_INBOX_GROUP_COMMIT"] = "false"
    ensure_database(os.environ["DATABASE_URL"])
    prepare_database(args.history)
    from django.test import Client

    client = Client(SERVER_NAME="127.0.0.1")
    tag = f"p{int(time.time()) % 0xFFFFFF:06x}"
    measure(client, "/t/v1/collect", 50, tag + "w")  # warm-up
    print(f"per request, mean of {args.requests} (load average before: {os.getloadavg()[0]:.1f})")
    print(f"{'view':<16} {'wall ms':>8} {'cpu ms':>8} {'driver cpu ms':>13} {'driver wall ms':>14} {'queries':>7}")
    for label, path in (("bare", "/bench/bare"), ("collect", "/t/v1/collect")) * 2:
        r = measure(client, path, args.requests, f"{tag}{label[0]}{time.time_ns() % 10**6}")
        print(f"{label:<16} {r['wall']:>8.2f} {r['cpu']:>8.2f} {r['db_cpu']:>13.2f} {r['db_wall']:>14.2f} "
              f"{r['queries']:>7.1f}")


if __name__ == "__main__":
    main()
