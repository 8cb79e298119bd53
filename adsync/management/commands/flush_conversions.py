"""`manage.py flush_conversions`: one flush, the same code the 2-minute `adsync:flush` job runs."""

from django.core.management.base import BaseCommand

from adsync.jobs import run_flush
from adsync.models import Connection
from adsync.push.operations import due_rows, summarize, validate


class Command(BaseCommand):
    help = "Send queued conversions to Microsoft Ads now (the same flush the schedule runs every 2 minutes)."

    def add_arguments(self, parser):
        parser.add_argument("--connection", type=int, action="append", dest="connections",
                            help="Only this connection id (repeatable).")
        parser.add_argument("--dry-run", action="store_true",
                            help="Build and check the payloads (mapping, goal, time guards, hashing); send nothing.")

    def handle(self, *args, connections=None, dry_run=False, **options):
        if dry_run:
            return self.dry_run(connections)
        results = run_flush(connections)
        if not results:
            self.stdout.write("No active connection to flush.")
        for result in results:
            self.stdout.write(result.line())

    def dry_run(self, connection_ids):
        connections = Connection.objects.filter(status=Connection.ACTIVE)
        if connection_ids:
            connections = connections.filter(pk__in=connection_ids)
        for connection in connections:
            self.stdout.write(f"{connection} (connection {connection.pk}):")
            for line in summarize(validate(due_rows(connection))):
                self.stdout.write(f"  {line}")
