#!/usr/bin/env python
"""A flush worker for the fault scripts: the real flush (adsync.jobs.run_flush) in a loop.

    fault_worker.py loop    flush again and again until killed (the kill -9 script kills it)
    fault_worker.py drain   flush until no row is queued or claimed, print "sent <rows it marked sent>", exit 0

Configured entirely by the environment its parent set (bench/faultkit.configure). Prints
"ready" once Django is set up, then waits for a line on stdin, so a parent can start several
workers at the same instant.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import django

    django.setup()
    from adsync.jobs import run_flush as flush_conversions
    from adsync.models import Push

    mode = sys.argv[1]
    print("ready", flush=True)
    sys.stdin.readline()
    deadline = time.monotonic() + 600  # bounded: a worker never outlives its run
    sent = 0
    while time.monotonic() < deadline:
        sent += sum(result.sent for result in flush_conversions())
        if mode == "drain" and not Push.objects.filter(status=Push.QUEUED).exists():
            print(f"sent {sent}", flush=True)
            return
        time.sleep(0.02)
    sys.exit("gave up after 600 s")


if __name__ == "__main__":
    main()
