"""`manage.py setup_roles`: create or reset the operators and viewers groups (idempotent).

Run after `migrate`, next to `setup_schedules`; never from AppConfig.ready().
"""

from django.core.management.base import BaseCommand

from adsync.security.roles import ensure_roles


class Command(BaseCommand):
    help = "Create or reset the staff groups 'operators' and 'viewers' (safe to run repeatedly)."

    def handle(self, *args, **options):
        for name, count in ensure_roles().items():
            self.stdout.write(f"{name}: {count} permission(s)")
