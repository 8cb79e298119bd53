"""adsync's django-q2 schedules, as data: one row each, keyed by a prefixed name."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from django_q.models import Schedule


def schedule_specs() -> list[dict]:
    return [
        {
            "name": "adsync:flush",
            "func": "adsync.tasks.scheduled_flush",
            "schedule_type": Schedule.MINUTES,
            "minutes": settings.ADSYNC_FLUSH_MINUTES,
        },
        {
            # Microsoft may drop conversions for unknown goals silently: keep the cache fresh.
            "name": "adsync:goals",
            "func": "adsync.goals.refresh_all_goals",
            "schedule_type": Schedule.DAILY,
        },
        {
            "name": "adsync:maintenance",
            "func": "adsync.maintenance.run_maintenance",
            "schedule_type": Schedule.DAILY,
        },
    ]


def ensure_schedules() -> list[tuple[str, bool]]:
    """update_or_create each schedule; a changed definition gets its next_run reset."""
    outcome = []
    for spec in schedule_specs():
        name = spec.pop("name")
        existing = Schedule.objects.filter(name=name).first()
        changed = existing is None or any(getattr(existing, k) != v for k, v in spec.items())
        schedule, created = Schedule.objects.update_or_create(name=name, defaults=spec)
        if changed and not created:
            # save() computes next_run only for new rows (style.md, django-q2 pitfalls).
            Schedule.objects.filter(pk=schedule.pk).update(next_run=timezone.now())
        outcome.append((name, created))
    return outcome
