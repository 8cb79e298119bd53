#!/usr/bin/env python
"""Fuzz the public endpoints with malformed requests; exit status 1 on any failure.

    .venv/bin/python bench/fuzz_public_endpoints.py --requests 10000 --seed 7

The strategies and the properties (no 5xx; a 4xx stores nothing; a 2xx stores only valid rows;
no SQL parameter PostgreSQL would refuse) live in tests/fuzzing.py, shared with the suite's
tests/tracking/test_fuzz.py. Requests go through Django's test client to a throwaway in-memory SQLite
database migrated at start: this script never touches a real database. It prints one summary
line, then up to --show failing requests (the 10,000-request run is recorded in docs/reliability.md).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DATABASE_URL"] = "sqlite://:memory:"  # forced: fuzzing stores junk by design
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class Tally:
    """What the run saw: statuses, failing requests by kind of failure, and a few examples to print."""

    def __init__(self) -> None:
        self.sent = 0
        self.statuses: Counter[int] = Counter()
        self.kinds: Counter[str] = Counter()
        self.failed = 0
        self.examples: list[str] = []

    def record(self, request, outcome, show: int) -> None:
        self.sent += 1
        self.statuses[outcome.status] += 1
        if not outcome.problems:
            return
        self.failed += 1
        self.kinds.update({kind_of(problem) for problem in outcome.problems})  # requests, not problems
        if len(self.examples) < show:
            self.examples.append(f"{request.describe()}\n    -> {outcome.problems}")

    def line(self, seconds: float) -> str:
        statuses = ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items()))
        return (f"fuzz: {self.sent} requests in {seconds:.1f} s; statuses {{{statuses}}}; "
                f"5xx {self.kinds['5xx']}; storing invalid rows {self.kinds['invalid rows']}; "
                f"with SQL parameters PostgreSQL refuses {self.kinds['postgres']}; failing requests {self.failed}")


def kind_of(problem: str) -> str:
    if problem.startswith(("status ", "exception")):
        return "5xx"
    if problem.startswith("SQL parameter"):
        return "postgres"
    return "invalid rows"


def stored_rows() -> str:
    from adsync.models import Click, Conversion, Push

    counts = {"clicks": Click, "conversions": Conversion, "pushes": Push}
    return ", ".join(f"{model.objects.count()} {name}" for name, model in counts.items())


def setup_django() -> None:
    import django
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    django.setup()
    setup_test_environment(debug=False)  # "testserver" host, locmem email, no debug pages
    for name in ("django.request", "django.security"):
        logging.getLogger(name).disabled = True  # thousands of expected 4xx warnings
    call_command("migrate", verbosity=0, interactive=False)


def fuzz(endpoint: str, count: int, seed: int, tally: Tally, show: int) -> None:
    from django.test import Client
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    from tests import fuzzing

    client = Client()

    @hypothesis_seed(seed)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data):
        request = data.draw(fuzzing.REQUESTS[endpoint])
        tally.record(request, fuzzing.send(client, request), show)

    run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="total, shared evenly by the endpoints")
    parser.add_argument("--seed", type=int, default=None, help="Hypothesis seed (default: random, printed)")
    parser.add_argument("--show", type=int, default=10, help="failing requests to print")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2 ** 32)
    setup_django()
    from tests import fuzzing

    fuzzing.make_target()
    per_endpoint = math.ceil(args.requests / len(fuzzing.ENDPOINTS))
    tally, started = Tally(), time.perf_counter()
    for endpoint in fuzzing.ENDPOINTS:
        before = tally.sent
        fuzz(endpoint, per_endpoint, seed, tally, args.show)
        print(f"  {endpoint}: {tally.sent - before} requests", flush=True)
    print(tally.line(time.perf_counter() - started) + f"; seed {seed}")
    print(f"rows stored from valid input: {stored_rows()}")
    for example in tally.examples:
        print(example)
    return 1 if tally.failed or tally.sent < args.requests else 0


if __name__ == "__main__":
    sys.exit(main())
