"""The start-up refusal: production never runs on the repository's public defaults.

config/settings.py calls `insecure_start_problem` while it reads the environment, before Django is
set up, so this module imports nothing of Django. Outside emulator mode, and in any mode whenever
DEBUG is false, a missing or default SECRET_KEY, a missing or malformed ADSYNC_ENCRYPTION_KEY, or
DEBUG=true outside emulator mode stop the start with one line naming the variable to set
(docs/security.md#production-refuses-insecure-defaults).
"""

from __future__ import annotations

import base64
import binascii

# The repository's public development key: anyone can read it, so it signs nothing in production.
DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me"
MIN_SECRET_KEY_LENGTH = 50  # as `check --deploy` asks (security.W009)
NEW_SECRET_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
NEW_FERNET_KEY = "python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


def insecure_start_problem(*, emulator: bool, debug: bool, secret_key: str, encryption_keys: list[str]) -> str | None:
    """The one line explaining why this configuration must not start, or None when it may."""
    if not emulator and debug:
        return ("DEBUG: set DEBUG=false (or leave it unset): outside emulator mode DEBUG would show settings, "
                "code and visitor data on every error page.")
    if emulator and debug:
        return None  # the developer's laptop: the defaults are fine
    if not secret_key or secret_key == DEV_SECRET_KEY:
        return f"SECRET_KEY: set it to a long random value of your own, e.g. from {NEW_SECRET_KEY}"
    if len(secret_key) < MIN_SECRET_KEY_LENGTH:
        return f"SECRET_KEY: use at least {MIN_SECRET_KEY_LENGTH} random characters, e.g. from {NEW_SECRET_KEY}"
    if not encryption_keys:
        return (f"ADSYNC_ENCRYPTION_KEY: set it to a Fernet key (tokens and secrets are encrypted with it), "
                f"e.g. from {NEW_FERNET_KEY}")
    for position, key in enumerate(encryption_keys, start=1):
        if not is_fernet_key(key):
            return (f"ADSYNC_ENCRYPTION_KEY: key {position} is not a Fernet key (32 url-safe base64-encoded bytes); "
                    f"make one with {NEW_FERNET_KEY}")
    return None


def is_fernet_key(key: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(key.encode())) == 32
    except (binascii.Error, ValueError):
        return False
