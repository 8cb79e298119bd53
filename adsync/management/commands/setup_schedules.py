"""`manage.py setup_schedules`: create or update adsync's django-q2 schedules (idempotent).

Run after `migrate`, never from AppConfig.ready(). Schedules are rows named `adsync:*`.
"""

from django.core.management.base import BaseCommand

from adsync.jobs import ensure_schedules


class Command(BaseCommand):
    help = "Create or update adsync's django-q2 schedules (safe to run repeatedly)."

    def handle(self, *args, **options):
        for name, created in ensure_schedules():
            self.stdout.write(f"{'created' if created else 'up to date'}: {name}")
