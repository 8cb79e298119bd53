"""`manage.py flush_conversions`: one flush, the same code the 2-minute `adsync:flush` job runs.

It prints each connection's outcome once (the flush itself logs nothing at INFO, so the console
does not show every line twice) and what still waits: queued rows due now or waiting until when,
and pending_identity rows. `--dry-run` sends nothing and says what a flush would send and why the
rest would not go.
"""

from django.core.management.base import BaseCommand

from adsync.jobs import run_flush
from adsync.models import Connection
from adsync.push.operations import dry_run, queue_summary


class Command(BaseCommand):
    help = "Send queued conversions to Microsoft Ads now (the same flush the schedule runs every 2 minutes)."

    def add_arguments(self, parser):
        parser.add_argument("--connection", type=int, action="append", dest="connections",
                            help="Only this connection id (repeatable).")
        parser.add_argument("--dry-run", action="store_true",
                            help="Say what a flush would send and why the rest would not go; send nothing.")

    def handle(self, *args, connections=None, dry_run=False, **options):
        if dry_run:
            return self.dry_run(connections)
        results = run_flush(connections)
        if not results:
            self.stdout.write("No active connection to flush.")
        by_id = Connection.objects.select_related("site").in_bulk([r.connection_id for r in results])
        for result in results:
            connection = by_id[result.connection_id]
            self.stdout.write(f"{connection} (connection {connection.pk}): {result.summary()}")
            self.stdout.write(f"  still waiting: {queue_summary(connection)}")

    def dry_run(self, connection_ids):
        connections = Connection.objects.select_related("site").order_by("pk")
        if connection_ids:
            connections = connections.filter(pk__in=connection_ids)
        for connection in connections:
            self.stdout.write(f"{connection} (connection {connection.pk}):")
            for line in dry_run(connection):
                self.stdout.write(f"  {line}")
