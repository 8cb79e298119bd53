"""`manage.py flush_conversions`: one flush, the same code the 2-minute schedule runs."""

from django.core.management.base import BaseCommand

from adsync.tasks import flush_conversions


class Command(BaseCommand):
    help = "Send queued conversions to Microsoft Ads now (the same flush the schedule runs every 2 minutes)."

    def add_arguments(self, parser):
        parser.add_argument("--connection", type=int, action="append", dest="connections",
                            help="Only this connection id (repeatable).")

    def handle(self, *args, connections=None, **options):
        results = flush_conversions(connection_ids=connections)
        if not results:
            self.stdout.write("No active connection to flush.")
        for result in results:
            self.stdout.write(result.line())
