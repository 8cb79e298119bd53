#!/usr/bin/env python
"""Inbox drain benchmark: how many snippet hits per second one worker process stores.

Queues `--hits` valid conversion hits for the ingest bench's site (bench/ingest_bench.py prepares
it, with its 1,000,000 earlier conversions by default), then runs the worker's drain
(adsync/intake/inbox.py) in this process and prints hits/second and CPU per hit. Not a test: it measures.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/adsync_bench_ingest .venv/bin/python bench/drain_bench.py

Never point it at a database you care about (see bench/ingest_bench.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.ingest_bench import DEFAULT_DB, SITE_KEY, ensure_database, prepare_database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=2000, help="hits to queue and store per round, default 2,000")
    parser.add_argument("--rounds", type=int, default=2, help="default 2")
    parser.add_argument("--history", type=int, default=1_000_000, help="as in ingest_bench.py, default 1,000,000")
    args = parser.parse_args()
    os.environ.setdefault("DATABASE_URL", DEFAULT_DB)
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.ingest_settings"
    os.environ["ADSYNC_INBOX_GROUP_COMMIT"] = "false"  # queue from this one thread, directly
    ensure_database(os.environ["DATABASE_URL"])
    prepare_database(args.history)
    from adsync.intake import inbox
    from tracking import accept, payloads
    from tracking.site_cache import site_for_key

    site = site_for_key(SITE_KEY)
    print(f"per round: {args.hits} conversion hits, each with a new msclkid (load average before: "
          f"{os.getloadavg()[0]:.1f})")
    for round_ in range(args.rounds):
        tag = f"d{time.time_ns() % 10**9:x}{round_}"
        for i in range(args.hits):
            report = payloads.parse_collect({"type": "conversion", "event": "purchase", "orderId": f"{tag}-{i}",
                                             "msclkid": f"{tag}{i:012x}", "visitorId": f"v{tag}{i}",
                                             "value": 49.9, "currency": "USD"}, site)
            accept.accept(site, report)
        wall, cpu = time.perf_counter(), time.process_time()
        result = inbox.drain()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{result.line()} in {wall:.1f} s: {result.stored / wall:.0f} hits/s, "
              f"{cpu / max(result.stored, 1) * 1e3:.2f} ms of this process's CPU per hit")


if __name__ == "__main__":
    main()
