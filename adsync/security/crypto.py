"""Encryption at rest for tokens and secrets (Fernet, with MultiFernet key rotation).

ADSYNC_ENCRYPTION_KEY holds one or more Fernet keys, newest first: data is encrypted with the
first and decrypted with any, so a new key goes in front and `manage.py rotate_encryption`
re-encrypts existing rows. Without it (emulator mode with DEBUG on only: production refuses to
start, adsync/security/startup.py) a key is derived from SECRET_KEY.

Moving to ADSYNC_ENCRYPTION_KEY keeps what was written before readable: the keys derived from
SECRET_KEY (and from the repository's public development key, which older installations ran
with) stay as decrypt-only fallbacks until `rotate_encryption` has moved every value to the new
key and recorded it (EncryptionKeyState). From then on they decrypt nothing, so a value someone
planted under a key anyone can derive is refused.
"""

from __future__ import annotations

import base64
import hashlib
import time
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.db import DatabaseError, models, transaction
from django.utils import timezone

from adsync.conf import conf
from adsync.security.startup import DEV_SECRET_KEY

KEY_STATE_SECONDS = 60  # how long a process trusts what it read of the derived keys' retirement
_key_state: dict[str, float | bool] = {}


def derive_key(secret_key: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest()).decode()


@lru_cache(maxsize=8)
def _fernet_for(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in keys])


def fernet() -> MultiFernet:
    """Encrypts with the first configured key (or the derived one when none is), decrypts with any configured."""
    return _fernet_for(tuple(conf.encryption_keys) or (derive_key(conf.secret_key),))


def legacy_fernet() -> MultiFernet | None:
    """The decrypt-only fallback for values written before ADSYNC_ENCRYPTION_KEY was set; None once retired."""
    if not conf.encryption_keys or derived_key_retired():
        return None
    return _fernet_for(tuple(dict.fromkeys([derive_key(conf.secret_key), derive_key(DEV_SECRET_KEY)])))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    token = ciphertext.encode()
    try:
        return fernet().decrypt(token).decode()
    except InvalidToken:
        legacy = legacy_fernet()
        if legacy is not None:
            try:
                return legacy.decrypt(token).decode()
            except InvalidToken:
                pass
        raise InvalidToken(
            "a stored secret cannot be decrypted: is ADSYNC_ENCRYPTION_KEY missing the key it was written with?"
        ) from None


def rotate(ciphertext: str) -> str:
    """Re-encrypt with the newest key (MultiFernet.rotate), reading values still under a fallback key too."""
    token = ciphertext.encode()
    try:
        return fernet().rotate(token).decode()
    except InvalidToken:
        legacy = legacy_fernet()
        if legacy is None:
            raise
        return fernet().encrypt(legacy.decrypt(token)).decode()


# --- The derived keys' retirement (recorded by rotate_encryption) ------------------------------

def _state_rows():
    # By name: the security layer sits below the models (pyproject.toml's import contracts).
    return apps.get_model("adsync", "EncryptionKeyState").objects


def derived_key_retired() -> bool:
    """True once rotate_encryption has moved every value to ADSYNC_ENCRYPTION_KEY (read at most once a minute)."""
    now = time.monotonic()
    if now < _key_state.get("until", 0.0):
        return bool(_key_state["retired"])
    try:
        with transaction.atomic():  # a savepoint: a missing table must not break the caller's transaction
            retired = _state_rows().filter(derived_key_retired_at__isnull=False).exists()
    except DatabaseError:  # not migrated yet
        retired = False
    _key_state.update(retired=retired, until=now + KEY_STATE_SECONDS)
    return retired


def retire_derived_key() -> None:
    """Record that no stored value needs the derived keys any more; every process stops using them."""
    _state_rows().update_or_create(pk=1, defaults={"derived_key_retired_at": timezone.now()})
    forget_key_state()


def forget_key_state() -> None:
    """Read the retirement afresh on next use (after rotate_encryption, and between tests)."""
    _key_state.clear()


class EncryptedTextField(models.TextField):
    """A text column that holds Fernet ciphertext; Python code only ever sees plaintext.

    Empty strings are stored as empty strings so "no token" stays queryable.
    """

    def from_db_value(self, value, expression, connection):
        if not value:
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if not value:
            return value
        return encrypt(value)
