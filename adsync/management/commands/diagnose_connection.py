"""`manage.py diagnose_connection`: the troubleshooting checklist in the foreground, exit status 1 when a check fails."""

from django.core.management.base import BaseCommand, CommandError

from adsync.diagnosis.run import diagnose
from adsync.management.selection import select_connections
from adsync.models import DiagnosisRun
from adsync.models.diagnosis import FAIL, PASS, SKIP, WARN


class Command(BaseCommand):
    help = ("Run the troubleshooting checklist (tokens, developer token, auto-tagging, Goal Names, snippet, "
            "pending_identity, flush and insights, errors, reconciliation) now, print it, and store the run on the "
            "card. Exits non-zero if any check fails.")

    def add_arguments(self, parser):
        parser.add_argument("--site", metavar="KEY", help="Only the connections of the site with this public key.")
        parser.add_argument("--connection", type=int, metavar="ID", help="Only this connection id.")

    def handle(self, *args, site=None, connection=None, **options):
        connections = select_connections(site, connection)
        if not connections:
            self.stdout.write("No connection matched.")
            return
        failed = []
        for conn in connections:
            run = diagnose(conn, trigger=DiagnosisRun.COMMAND)
            self.print_run(run)
            if run.outcome == FAIL:
                failed.append(conn)
        line = f"{len(connections)} connection(s) checked, {len(failed)} with a failing check."
        if failed:
            # CommandError makes manage.py exit with status 1, after printing the line.
            raise CommandError(line)
        self.stdout.write(line)

    def print_run(self, run: DiagnosisRun) -> None:
        styles = {PASS: self.style.SUCCESS, WARN: self.style.WARNING, FAIL: self.style.ERROR, SKIP: str}
        head, *_ = run.checklist_lines()
        self.stdout.write(styles[run.outcome](head))
        if run.note:
            self.stdout.write(f"Note: {run.note}")
        for result in run.results:
            first, *rest = result.lines()
            self.stdout.write(styles[result.outcome](first))
            for line in rest:
                self.stdout.write(line)
        self.stdout.write("")
