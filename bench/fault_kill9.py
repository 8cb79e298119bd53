#!/usr/bin/env python
"""Fault: kill -9 flush workers at random moments while they flush a large queue; lose nothing.

Queues --rows conversions on PostgreSQL, then repeatedly starts a flush worker (a separate
process running the real flush in a loop, bench/fault_worker.py) and SIGKILLs it after a random
delay, with a short claim lease (ADSYNC_CLAIM_LEASE_SECONDS) so the rows a dead worker held
are reclaimed within the run. Kills land anywhere: inside the claim transaction, during the
HTTP call, after Microsoft applied a batch but before the rows were marked sent. Microsoft is a
loopback stand-in that records every conversion it receives.

Then a last worker drains the queue, and the script checks:
- every row ends `sent` or still `queued` (before the drain) and `sent` after it; none lost;
- every row marked sent was received by Microsoft;
- every conversion received more than once carries the same (goal, msclkid, ConversionTime)
  as the first, so Microsoft ignores the repeat (docs/microsoft-api.md#deduplication).
Prints the counts and exits 1 on any violation.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/adsync_fault .venv/bin/python bench/fault_kill9.py
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import faultkit

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/adsync_fault"


def queued_left() -> int:
    from adsync.models import Push

    return Push.objects.filter(status=Push.QUEUED).count()


def kill_phase(kills: int, max_delay: float, log: Path) -> tuple[int, int]:
    """Start a worker, SIGKILL it after a random delay, repeat.

    Returns (workers killed, kills that left a claimed batch behind, i.e. landed between the
    claim and the recorded outcome)."""
    from django.utils import timezone

    from adsync.models import Push

    done = holding = 0
    for _ in range(kills):
        if not queued_left():
            break
        held_before = set(Push.objects.filter(claimed_until__gt=timezone.now()).values_list("claim_token", flat=True))
        worker = faultkit.spawn_worker("loop", log)
        faultkit.wait_ready(worker)
        faultkit.go(worker)
        time.sleep(random.uniform(0.0, max_delay))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        done += 1
        held_after = Push.objects.filter(claimed_until__gt=timezone.now()).exclude(claim_token__in=held_before)
        holding += held_after.exists()
    return done, holding


def drain(log: Path, timeout: float) -> None:
    worker = faultkit.spawn_worker("drain", log)
    faultkit.wait_ready(worker)
    faultkit.go(worker)
    try:
        worker.wait(timeout=timeout)
    except Exception:  # noqa: BLE001 - a fault script reports any failure as a result
        worker.kill()
        worker.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="queued conversions, default 20,000")
    parser.add_argument("--kills", type=int, default=60, help="workers to kill -9 at most, default 60")
    parser.add_argument("--max-delay", type=float, default=0.5, help="a worker lives 0..this many seconds, default 0.5")
    parser.add_argument("--batch-size", type=int, default=100, help="rows per Apply call, default 100")
    parser.add_argument("--lease", type=int, default=5, help="ADSYNC_CLAIM_LEASE_SECONDS, default 5")
    parser.add_argument("--seed", type=int, default=None, help="random seed, to replay a run")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    random.seed(seed)

    recorder = faultkit.Recorder(latency=(0.0, 0.01))
    stand_in = faultkit.start_stand_in(recorder)
    faultkit.configure(os.environ.get("DATABASE_URL", DEFAULT_DB), stand_in, lease_seconds=args.lease,
                       batch_size=args.batch_size)
    faultkit.queue_backlog(args.rows)
    print(f"kill -9 fault run: {args.rows} rows, batches of {args.batch_size}, lease {args.lease} s, seed {seed}")

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "workers.log"
        started = time.monotonic()
        kills, holding = kill_phase(args.kills, args.max_delay, log)
        print("after the kills (rows held by a killed worker wait for their lease):")
        mid = faultkit.check(args.rows, recorder, allow_duplicates=True)
        faultkit.print_verdict(mid, kills=kills, **{"kills holding a batch": holding})
        drain(log, timeout=args.lease * 4 + 120)
        elapsed = time.monotonic() - started
        errors = log.read_text(errors="replace").strip()
    print("after a last worker drained the queue:")
    final = faultkit.check(args.rows, recorder, allow_duplicates=True)
    if final.statuses.get("queued"):
        final.violations.append(f"{final.statuses['queued']} rows still queued after the drain")
    faultkit.print_verdict(final, kills=kills, seconds=f"{elapsed:.1f}")
    if errors:
        print("worker stderr (last lines):\n" + "\n".join(errors.splitlines()[-10:]))
    return 0 if mid.ok and final.ok else 1


if __name__ == "__main__":
    sys.exit(main())
