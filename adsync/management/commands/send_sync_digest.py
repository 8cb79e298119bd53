"""`manage.py send_sync_digest [--since 24h] [--dry-run]`: the daily digest, now.

A thin shell over adsync.notify.digest.send_digest, the function the `adsync:digest` schedule runs.
"""

import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from adsync.notify.digest import render_digest, send_digest

_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_window(text: str) -> timedelta:
    """'90m', '24h', '7d' → a timedelta."""
    match = re.fullmatch(r"\s*(\d+)\s*([mhd])\s*", text.lower())
    if not match or int(match[1]) == 0:
        raise CommandError(f"--since must look like 90m, 24h or 7d, got {text!r}")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


class Command(BaseCommand):
    help = "Email the sync digest (errors, Token expired / stale cards, pending_identity share) to opted-in staff."

    def add_arguments(self, parser):
        parser.add_argument("--since", default="24h", help="How far back to look: 90m, 24h (default), 7d.")
        parser.add_argument("--dry-run", action="store_true", help="Print the email instead of sending it.")

    def handle(self, *args, since: str, dry_run: bool, **options):
        outcome = send_digest(parse_window(since), dry_run=dry_run)
        if dry_run and not outcome.digest.is_empty:
            subject, text, _ = render_digest(outcome.digest)
            recipients = ", ".join(outcome.recipients) or "nobody has opted in"
            self.stdout.write(f"To: {recipients}\nSubject: {subject}\n\n{text}")
            return
        self.stdout.write(outcome.line())
