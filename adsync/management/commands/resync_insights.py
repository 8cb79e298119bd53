"""`manage.py resync_insights`: the insights sync in the foreground, the same code the 05:00 UTC schedule runs."""

from django.core.management.base import BaseCommand, CommandError

from adsync.insights.sync import DEFAULT_DAYS, FAILED, OK, SKIPPED, InsightsResult, sync_many
from adsync.management.selection import select_connections


class Command(BaseCommand):
    help = ("Pull campaign performance from Microsoft Ads now, one connection after another, with a line per "
            "connection. Exits non-zero if any connection failed.")

    def add_arguments(self, parser):
        parser.add_argument("--site", metavar="KEY", help="Only the connections of the site with this public key.")
        parser.add_argument("--connection", type=int, metavar="ID", help="Only this connection id.")
        parser.add_argument("--days", type=int, default=DEFAULT_DAYS,
                            help=f"How many days back, ending today (default {DEFAULT_DAYS}).")

    def handle(self, *args, site=None, connection=None, days=DEFAULT_DAYS, **options):
        if days < 1:
            raise CommandError("--days must be at least 1.")
        connections = select_connections(site, connection)
        if not connections:
            self.stdout.write("No connection matched.")
            return
        results = sync_many(connections, days, progress=self.progress)
        self.summary(results)

    def progress(self, result: InsightsResult) -> None:
        style = {OK: self.style.SUCCESS, SKIPPED: self.style.WARNING, FAILED: self.style.ERROR}[result.outcome]
        self.stdout.write(style(result.line()))

    def summary(self, results: list[InsightsResult]) -> None:
        counts = {outcome: sum(r.outcome == outcome for r in results) for outcome in (OK, SKIPPED, FAILED)}
        line = (f"{len(results)} connection(s): {counts[OK]} ok, {counts[SKIPPED]} skipped (not active), "
                f"{counts[FAILED]} failed.")
        if counts[FAILED]:
            # CommandError makes manage.py exit with status 1, after printing the line.
            raise CommandError(line)
        self.stdout.write(line)
