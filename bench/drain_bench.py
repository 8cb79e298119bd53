#!/usr/bin/env python
"""Inbox drain benchmark: how many snippet hits per second one worker process stores.

Queues `--hits` valid hits for the ingest bench's site (bench/ingest_bench.py prepares it, with its
1,000,000 earlier conversions by default) through the endpoint's own code (tracking/accept.py),
then runs the worker's drain (adsync/intake/inbox.py) in this process and prints hits/second, CPU
per hit, SQL statements per chunk and the process's peak RSS. Not a test: it measures.

- default: conversion hits, each with a new msclkid (what the earlier sessions measured);
- `--mix`: visitors landing and buying: a click hit, then a conversion without msclkid that the
  drain attributes to the visitor's click, and one conversion in ten repeated (the snippet's retry).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/adsync_bench_ingest .venv/bin/python bench/drain_bench.py
    … bench/drain_bench.py --hits 20000 --rounds 3 --mix

Never point it at a database you care about (see bench/ingest_bench.py).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.ingest_bench import DEFAULT_DB, SITE_KEY, ensure_database, prepare_database


def queue(site, hits: int, tag: str, mix: bool) -> None:
    from tracking import accept, payloads

    def send(body: dict) -> None:
        accept.accept(site, payloads.parse_collect(body, site))

    if not mix:
        for i in range(hits):
            send({"type": "conversion", "event": "purchase", "orderId": f"{tag}-{i}", "msclkid": f"{tag}{i:012x}",
                  "visitorId": f"v{tag}{i}", "value": 49.9, "currency": "USD"})
        return
    sent = 0
    for i in range(hits):
        if sent >= hits:
            return
        send({"type": "click", "visitorId": f"v{tag}{i}", "msclkid": f"{tag}{i:012x}", "url": "https://shop/"})
        purchase = {"type": "conversion", "event": "purchase", "orderId": f"{tag}-{i}", "visitorId": f"v{tag}{i}",
                    "value": 49.9, "currency": "USD"}
        send(purchase)
        sent += 2
        if i % 10 == 0 and sent < hits:
            send(purchase)
            sent += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=10_000, help="hits to queue and store per round, default 10,000")
    parser.add_argument("--rounds", type=int, default=2, help="default 2")
    parser.add_argument("--mix", action="store_true", help="clicks, then conversions attributed through them")
    parser.add_argument("--history", type=int, default=1_000_000, help="as in ingest_bench.py, default 1,000,000")
    args = parser.parse_args()
    os.environ.setdefault("DATABASE_URL", DEFAULT_DB)
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.ingest_settings"
    os.environ["ADSYNC_INBOX_GROUP_COMMIT"] = "false"  # queue from this one thread, directly
    ensure_database(os.environ["DATABASE_URL"])
    prepare_database(args.history)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from adsync.intake import inbox
    from tracking.site_cache import site_for_key

    site = site_for_key(SITE_KEY)
    kind = "clicks and conversions attributed through them" if args.mix else "conversion hits, each with a new msclkid"
    print(f"per round: {args.hits} {kind}; chunks of {inbox.CHUNK}; history {args.history} conversions "
          f"(load average before: {os.getloadavg()[0]:.1f})")
    for round_ in range(args.rounds):
        queue(site, args.hits, f"d{time.time_ns() % 10**9:x}{round_}", args.mix)
        with CaptureQueriesContext(connection) as queries:
            wall, cpu = time.perf_counter(), time.process_time()
            result = inbox.drain()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        chunks = sum(1 for q in queries.captured_queries if q["sql"].startswith('DELETE FROM "tracking_hit"'))
        print(f"{result.line()} in {wall:.2f} s: {result.stored / wall:.0f} hits/s, "
              f"{cpu / max(result.stored, 1) * 1e3:.3f} ms of this process's CPU per hit, "
              f"{len(queries) / max(chunks, 1):.1f} statements per chunk ({chunks} chunks), "
              f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
