"""adsync's django-q2 schedules, as data: one row each, keyed by a prefixed name."""

from __future__ import annotations

from datetime import datetime
from datetime import timezone as dt_timezone

from croniter import croniter
from django.conf import settings
from django.utils import timezone
from django_q.models import Schedule

INSIGHTS_CRON = "0 5 * * *"  # 05:00 UTC (Q_CLUSTER time_zone is UTC)


def next_cron_run(cron: str, now: datetime | None = None) -> datetime:
    """The next time `cron` matches, evaluated in UTC."""
    start = (now or timezone.now()).astimezone(dt_timezone.utc)
    return croniter(cron, start).get_next(datetime)


def schedule_specs() -> list[dict]:
    return [
        {
            "name": "adsync:flush",
            "func": "adsync.tasks.scheduled_flush",
            "schedule_type": Schedule.MINUTES,
            "minutes": settings.ADSYNC_FLUSH_MINUTES,
        },
        {
            # The snippet's hits, accepted with 202, become clicks, conversions and sync-log rows.
            "name": "adsync:inbox",
            "func": "tracking.inbox.scheduled_drain",
            "schedule_type": Schedule.MINUTES,
            "minutes": settings.ADSYNC_INBOX_MINUTES,
        },
        {
            # Refresh before expiry while pushes wait, and weekly even when idle (90-day inactivity).
            "name": "adsync:refresh-tokens",
            "func": "adsync.lifecycle.scheduled_token_refresh",
            "schedule_type": Schedule.MINUTES,
            "minutes": settings.ADSYNC_TOKEN_REFRESH_MINUTES,
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
        {
            # Campaign performance, daily at 05:00 UTC: one queued task per active connection.
            "name": "adsync:insights",
            "func": "adsync.insights.scheduled_insights",
            "schedule_type": Schedule.CRON,
            "cron": INSIGHTS_CRON,
        },
        {
            # The sync digest for staff who opted in (docs/notifications.md), default 07:00 UTC.
            "name": "adsync:digest",
            "func": "adsync.digest.scheduled_digest",
            "schedule_type": Schedule.CRON,
            "cron": settings.ADSYNC_DIGEST_CRON,
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
        if changed and spec["schedule_type"] == Schedule.CRON:
            # A cron's next run is its next matching time in UTC, not "now"; save() computes it
            # only for new rows, and in Django's TIME_ZONE rather than the cluster's UTC.
            Schedule.objects.filter(pk=schedule.pk).update(next_run=next_cron_run(spec["cron"]))
        elif changed and not created:
            # save() computes next_run only for new rows (style.md, django-q2 pitfalls).
            Schedule.objects.filter(pk=schedule.pk).update(next_run=timezone.now())
        outcome.append((name, created))
    return outcome
