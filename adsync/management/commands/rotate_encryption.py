"""`manage.py rotate_encryption`: re-encrypt every stored token and secret with the newest key."""

from django.core.management.base import BaseCommand

from adsync.security import crypto
from adsync.security.key_rotation import rotate_all


class Command(BaseCommand):
    help = ("Re-encrypt every stored token and secret with the first key of ADSYNC_ENCRYPTION_KEY. Run after adding "
            "a new key in front; remove the old keys only afterwards.")

    def handle(self, *args, **options):
        for label, count in rotate_all().items():
            self.stdout.write(f"{label}: {count} value(s) re-encrypted")
        if crypto.derived_key_retired():
            self.stdout.write("Every stored secret is under ADSYNC_ENCRYPTION_KEY: the key derived from SECRET_KEY "
                              "is retired and decrypts nothing any more.")
