"""Failure injection: the EmulatorBehaviour switches turned into faults, sleeps and flags."""

from __future__ import annotations

import time

from emulator.faults import Fault
from emulator.models import EmulatorBehaviour


def current() -> EmulatorBehaviour:
    return EmulatorBehaviour.load()


def sleep(seconds: float) -> None:
    """Indirection so tests can observe a simulated time-out without waiting for it."""
    time.sleep(seconds)


def inject_apply_failure() -> None:
    """Serve one of the 'next N Apply calls fail' switches, if any is armed.

    A time-out sleeps and then lets the call go through: the client has given up, yet the
    conversions are applied, the ambiguous case a retry must survive (Microsoft de-duplicates).
    """
    behaviour = current()
    if behaviour.apply_failure == EmulatorBehaviour.FAIL_NONE or not EmulatorBehaviour.take("apply_failure_count"):
        return
    if behaviour.apply_failure == EmulatorBehaviour.FAIL_500:
        raise Fault(0, status=500)
    if behaviour.apply_failure == EmulatorBehaviour.FAIL_THROTTLE:
        headers = {"Retry-After": str(behaviour.retry_after_seconds)} if behaviour.retry_after_seconds else {}
        raise Fault(117, status=429, headers=headers)
    sleep(behaviour.timeout_seconds)


def inject_report_concurrency_failure() -> None:
    if EmulatorBehaviour.take("report_concurrency_failure_count"):
        raise Fault(207, status=400)


def token_endpoint_fails() -> bool:
    return EmulatorBehaviour.take("token_failure_count")
