"""What the encryption at rest knows about its keys (adsync/security/crypto.py)."""

from __future__ import annotations

from django.db import models


class EncryptionKeyState(models.Model):
    """One row: when `rotate_encryption` moved every stored secret off the key derived from SECRET_KEY.

    Until then that key (and the one derived from the repository's public development key) stays a
    decrypt-only fallback, so installations moving to ADSYNC_ENCRYPTION_KEY keep their tokens.
    """

    derived_key_retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "encryption key state"

    def __str__(self) -> str:
        return f"derived key retired at {self.derived_key_retired_at:%Y-%m-%d %H:%M} UTC" \
            if self.derived_key_retired_at else "derived key still a fallback"
