#!/usr/bin/env python
"""Fault: several worker processes flush the same connection at the same moment; no row is sent twice.

Queues --rows conversions for one connection on PostgreSQL, starts --workers flush processes
(bench/fault_worker.py, the real flush), releases them at the same instant and lets each drain
the queue. The claim (SELECT … FOR UPDATE SKIP LOCKED, then a conditional UPDATE under a claim
token) must hand every row to exactly one of them. Microsoft is a loopback stand-in that records
every conversion it receives. Passes when every row is sent, Microsoft received each exactly
once, and the Apply requests were shared between the workers (they really overlapped).
Repeats --rounds times. Exits 1 on any violation.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/adsync_fault .venv/bin/python bench/fault_two_workers.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import faultkit

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/adsync_fault"


def run_round(rows: int, workers: int, recorder: faultkit.Recorder, log: Path) -> tuple[faultkit.Verdict, dict]:
    faultkit.queue_backlog(rows)
    with recorder.lock:
        recorder.items.clear()
        recorder.requests = 0
    procs = [faultkit.spawn_worker("drain", log) for _ in range(workers)]
    for proc in procs:
        faultkit.wait_ready(proc)
    started = time.monotonic()
    for proc in procs:  # all released at once: they race for the same rows
        faultkit.go(proc)
    codes = [proc.wait(timeout=300) for proc in procs]
    shares = [int(proc.stdout.read().split()[-1]) if not code else 0 for proc, code in zip(procs, codes, strict=True)]
    elapsed = time.monotonic() - started
    verdict = faultkit.check(rows, recorder, allow_duplicates=False)
    if verdict.statuses.get("queued"):
        verdict.violations.append(f"{verdict.statuses['queued']} rows still queued")
    if any(codes):
        verdict.violations.append(f"worker exit codes {codes}")
    if sum(shares) != verdict.statuses.get("sent", 0):
        verdict.violations.append(f"the workers say they sent {shares}, the table has {verdict.statuses.get('sent')}")
    if min(shares) == 0:
        verdict.violations.append(f"rows sent per worker {shares}: the workers did not overlap, nothing was proven")
    return verdict, {"rows sent per worker": " + ".join(map(str, shares)), "seconds": f"{elapsed:.1f}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="queued conversions, default 20,000")
    parser.add_argument("--workers", type=int, default=2, help="concurrent flush processes, default 2")
    parser.add_argument("--batch-size", type=int, default=100, help="rows per Apply call, default 100")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions, default 3")
    parser.add_argument("--lease", type=int, default=300,
                        help="ADSYNC_CLAIM_LEASE_SECONDS, default 300; 0 lets workers steal in-flight rows, "
                             "a negative control that must FAIL")
    args = parser.parse_args()

    recorder = faultkit.Recorder(latency=(0.0, 0.005))
    stand_in = faultkit.start_stand_in(recorder)
    # The default lease (300 s): nothing may be reclaimed here, so any double send is a claim bug.
    faultkit.configure(os.environ.get("DATABASE_URL", DEFAULT_DB), stand_in, lease_seconds=args.lease,
                       batch_size=args.batch_size)
    print(f"concurrent flush fault run: {args.rows} rows, {args.workers} worker processes, "
          f"batches of {args.batch_size}, {args.rounds} round(s)")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "workers.log"
        for round_ in range(1, args.rounds + 1):
            verdict, extra = run_round(args.rows, args.workers, recorder, log)
            print(f"round {round_}:")
            faultkit.print_verdict(verdict, **extra)
            failed += not verdict.ok
        errors = log.read_text(errors="replace").strip()
    if errors:
        print("worker stderr (last lines):\n" + "\n".join(errors.splitlines()[-10:]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
