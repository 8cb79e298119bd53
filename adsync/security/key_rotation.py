"""Re-encrypt every stored secret with the newest ADSYNC_ENCRYPTION_KEY (MultiFernet rotation).

Rotation: put the new key first in ADSYNC_ENCRYPTION_KEY (keep the old ones after it), deploy,
run `manage.py rotate_encryption`, then drop the old keys. The ciphertext is read and written
raw (never decrypted into Python objects or logs) and swapped only if no one changed it in between.
The first run after ADSYNC_ENCRYPTION_KEY was set also moves the values written under the key
derived from SECRET_KEY, then retires that key (adsync/security/crypto.py).
"""

from __future__ import annotations

from cryptography.fernet import InvalidToken
from django.apps import apps
from django.db import models
from django.db.models import Value
from django.db.models.functions import Cast

from adsync.conf import conf
from adsync.security import crypto
from adsync.security.crypto import EncryptedTextField


def encrypted_fields() -> list[tuple[type[models.Model], str]]:
    """Every (model, field name) stored with EncryptedTextField, in any installed app."""
    return [(model, f.name) for model in apps.get_models() for f in model._meta.concrete_fields
            if isinstance(f, EncryptedTextField)]


def rotate_field(model: type[models.Model], name: str) -> int:
    """Rotate one column; returns the number of values rewritten."""
    raw = Cast(name, output_field=models.TextField())  # the ciphertext, bypassing decryption
    rows = model._default_manager.exclude(**{name: ""}).annotate(raw=raw).values_list("pk", "raw")
    rotated = 0
    for pk, ciphertext in rows.iterator():
        new = crypto.rotate(ciphertext)
        # Compare-and-swap on the raw value: a token refreshed meanwhile is already on the newest key.
        rotated += model._default_manager.filter(pk=pk).annotate(raw=raw).filter(
            raw=Value(ciphertext, output_field=models.TextField())
        ).update(**{name: Value(new, output_field=models.TextField())})
    return rotated


def rotate_all() -> dict[str, int]:
    """{"app.Model.field": values rewritten} for every encrypted column; then, if every value now reads
    with ADSYNC_ENCRYPTION_KEY alone, the derived fallback keys are retired."""
    counts = {f"{model._meta.label}.{name}": rotate_field(model, name) for model, name in encrypted_fields()}
    if conf.encryption_keys and all(readable_with_configured_keys(model, name) for model, name in encrypted_fields()):
        crypto.retire_derived_key()
    return counts


def readable_with_configured_keys(model: type[models.Model], name: str) -> bool:
    raw = Cast(name, output_field=models.TextField())
    values = model._default_manager.exclude(**{name: ""}).annotate(raw=raw).values_list("raw", flat=True)
    try:
        for ciphertext in values.iterator():
            crypto.fernet().decrypt(ciphertext.encode())
    except InvalidToken:
        return False
    return True
