"""`manage.py connect_microsoft_ads`: connect a site from an existing refresh token (scripted set-up, support).

The same service function as the admin's Connect ends with (adsync.connections.lifecycle); the token is read
from a file (or stdin with `-`), validated by refreshing it once, and never printed.
"""

import sys

from django.core.management.base import BaseCommand, CommandError

from adsync import jobs
from adsync.connections.lifecycle import connect_with_refresh_token
from adsync.microsoft.errors import MicrosoftAdsError
from adsync.models import Site


class Command(BaseCommand):
    help = "Create or update a site's Microsoft Ads connection from an existing refresh token (validated once)."

    def add_arguments(self, parser):
        parser.add_argument("--site", required=True, help="The site's public key (pk_...).")
        parser.add_argument("--customer-id", required=True, help="ParentCustomerId: the CustomerId header.")
        parser.add_argument("--account-id", required=True, help="The numeric account Id: the CustomerAccountId header.")
        parser.add_argument("--refresh-token-file", required=True, help="File holding the refresh token, or - for stdin.")
        parser.add_argument("--account-name", default="", help="Shown on the card.")
        parser.add_argument("--client-id", default="", help="The Azure app the token was issued to (default: settings).")
        parser.add_argument("--client-secret-file", default="", help="File holding that app's client secret.")

    def handle(self, *args, **opts):
        site = Site.objects.filter(key=opts["site"]).first()
        if site is None:
            raise CommandError(f"No site with key {opts['site']!r}.")
        for name in ("customer_id", "account_id"):
            if not opts[name].isdigit():
                raise CommandError(f"--{name.replace('_', '-')} must be the numeric id (not the account Number).")
        try:
            connection = connect_with_refresh_token(
                site, customer_id=opts["customer_id"], account_id=opts["account_id"],
                refresh_token=_read_secret(opts["refresh_token_file"]), account_name=opts["account_name"],
                client_id=opts["client_id"], client_secret=_read_secret(opts["client_secret_file"]),
            )
        except MicrosoftAdsError as err:
            raise CommandError(f"The refresh token was not accepted; nothing was saved. Microsoft: {err.describe()} "
                               f"— {err.hint}") from None
        jobs.enqueue(jobs.connection_ready, connection.pk)  # held rows released, goals fetched, insights synced
        self.stdout.write(self.style.SUCCESS(
            f"Connected {site.name} → Account ID {connection.account_id} (connection {connection.pk}, Active); "
            f"access token valid until {connection.token_expires_at:%Y-%m-%d %H:%M} UTC."))


def _read_secret(path: str) -> str:
    if not path:
        return ""
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as exc:
        raise CommandError(f"Cannot read {path}: {exc.strerror}") from None
    if not text.strip():
        raise CommandError(f"{path} is empty.")
    return text.strip()
