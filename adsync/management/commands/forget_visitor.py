"""`manage.py forget_visitor`: erase a person's data (docs/tracking.md, Forgetting a person).

Shows what will go; erases only with --yes. Email and phone are hashed at once and never stored.
Tip: shells keep command lines in their history; pass an email or phone already hashed (SHA-256
hex, normalised as Microsoft asks), or start the line with a space where HISTCONTROL ignores it.
"""

import getpass

from django.core.management.base import BaseCommand, CommandError

from adsync.intake import forget
from adsync.intake.identity import IdentifierError
from adsync.models import Erasure, Site


class Command(BaseCommand):
    help = "Forget a person: delete their clicks and inbox hits, strip identifiers from their conversions and sync log."

    def add_arguments(self, parser):
        parser.add_argument("--email", default="", help="Their email (or its SHA-256 hash).")
        parser.add_argument("--phone", default="", help="Their phone, E.164 or the site's national format (or hash).")
        parser.add_argument("--visitor-id", default="", help="Their adsync_vid cookie value.")
        parser.add_argument("--order-id", default="", help="An order id of theirs.")
        parser.add_argument("--site", default="", help="Only this site (its public key); default every site.")
        parser.add_argument("--actor", default="", help="Who asks, for the audit line (default: the OS user).")
        parser.add_argument("--yes", action="store_true", help="Erase. Without it, only show what would go.")

    def handle(self, *args, email, phone, visitor_id, order_id, site, actor, yes, **options):
        if not any(v.strip() for v in (email, phone, visitor_id, order_id)):
            raise CommandError("Give at least one of --email, --phone, --visitor-id or --order-id.")
        scope = None
        if site:
            scope = Site.objects.filter(key=site).first()
            if scope is None:
                raise CommandError(f"No site with the key {site}.")
        try:
            who = forget.person(email=email, phone=phone, visitor_id=visitor_id, order_id=order_id, site=scope)
        except IdentifierError as error:
            raise CommandError(str(error)) from None
        footprint = forget.find(who)
        if footprint.empty:
            self.stdout.write("adsync holds nothing for these keys: nothing to erase.")
            return
        for line in footprint.lines():
            self.stdout.write(f"  {line}")
        if not yes:
            self.stdout.write("Nothing erased yet: run again with --yes to erase the above.")
            return
        erasure = forget.erase(footprint, actor=actor or getpass.getuser(), via=Erasure.VIA_COMMAND)
        counts = ", ".join(f"{n} {what}" for what, n in erasure.counts.items() if n)
        self.stdout.write(self.style.SUCCESS(f"Erased: {counts}. Audit line #{erasure.pk} (who and when, not what)."))
