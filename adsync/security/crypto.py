"""Encryption at rest for tokens and secrets (Fernet, with MultiFernet key rotation).

ADSYNC_ENCRYPTION_KEY holds one or more Fernet keys, newest first: data is encrypted with the
first and decrypted with any, so a new key goes in front and `manage.py rotate_encryption`
re-encrypts existing rows. With no key configured a key is derived from SECRET_KEY, which is
only acceptable for local development (a system check warns when DEBUG is off).
"""

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.db import models

from adsync.conf import conf


@lru_cache(maxsize=8)
def _fernet_for(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    if not keys:
        derived = base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest())
        keys = (derived.decode(),)
    return MultiFernet([Fernet(key.encode()) for key in keys])


def fernet() -> MultiFernet:
    return _fernet_for(tuple(conf.encryption_keys), conf.secret_key)


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise InvalidToken(
            "a stored secret cannot be decrypted: is ADSYNC_ENCRYPTION_KEY missing the key it was written with?"
        ) from None


def rotate(ciphertext: str) -> str:
    """Re-encrypt with the newest key (MultiFernet.rotate)."""
    return fernet().rotate(ciphertext.encode()).decode()


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
