"""Production refuses insecure defaults: each start is a real process with the environment a deployment would set.

Settings are read once per process, so the start-up rules, `check --deploy` and the routes of
production mode are tried in child processes (`manage.py`, or a short script); the encryption
key's move happens in this one.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.db import connection as db_connection

from adsync.models import Connection
from adsync.security import crypto
from adsync.security.startup import DEV_SECRET_KEY

ROOT = Path(__file__).resolve().parents[2]
SECURITY_DOC = ROOT / "docs" / "security.md"
# Variables a test process may have that would change what a fresh start decides.
_CLEARED = ("DEBUG", "SECRET_KEY", "ADSYNC_ENCRYPTION_KEY", "MICROSOFT_ADS_ENVIRONMENT", "DATABASE_URL",
            "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "ADSYNC_REQUIRE_MFA", "REDIS_URL")


def fresh_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED and not k.startswith("DJANGO_")}
    return {**env, "DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": "sqlite:///:memory:", **variables}


def manage(*args: str, **variables: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=fresh_env(**variables),
                          capture_output=True, text=True, timeout=120)


def python(script: str, **variables: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import django; django.setup()\n" + script], cwd=ROOT,
                          env=fresh_env(**variables), capture_output=True, text=True, timeout=120)


def documented_production_environment() -> dict[str, str]:
    """The environment docs/security.md gives for production, with its placeholders filled in."""
    block = re.search(r"<!-- production environment -->\s*```sh\n(.*?)```", SECURITY_DOC.read_text(), re.S)
    assert block, "docs/security.md has no production environment block"
    filled = {"<50 or more random characters>": secrets.token_urlsafe(50),
              "<a Fernet key>": Fernet.generate_key().decode()}
    env = {}
    for line in block.group(1).splitlines():
        line = line.split("  #")[0].strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = filled.get(value, value)
    return env


PRODUCTION = {"MICROSOFT_ADS_ENVIRONMENT": "production", "SECRET_KEY": "p" + "x" * 60,
              "ADSYNC_ENCRYPTION_KEY": Fernet.generate_key().decode()}


# --- Production mode starts with DEBUG on and the repository's public SECRET_KEY ----------------------

@pytest.mark.parametrize("variables, named", [
    ({"SECRET_KEY": ""}, "SECRET_KEY"),
    ({"SECRET_KEY": DEV_SECRET_KEY}, "SECRET_KEY"),
    ({"SECRET_KEY": "short"}, "SECRET_KEY"),
    ({"ADSYNC_ENCRYPTION_KEY": ""}, "ADSYNC_ENCRYPTION_KEY"),
    ({"ADSYNC_ENCRYPTION_KEY": "not-a-fernet-key"}, "ADSYNC_ENCRYPTION_KEY"),
    ({"DEBUG": "true"}, "DEBUG"),
], ids=["no-secret-key", "public-secret-key", "short-secret-key", "no-encryption-key", "bad-encryption-key", "debug"])
def test_production_mode_with_debug_on_or_the_public_secret_key_refuses_to_start_naming_the_variable(variables, named):
    started = manage("check", **{**PRODUCTION, **variables})

    assert started.returncode == 1
    [line] = started.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(f"adsync will not start: {named}: ")


def test_with_debug_off_even_emulator_mode_needs_its_own_secret_key_and_encryption_key():
    started = manage("check", DEBUG="false")

    assert started.returncode == 1
    assert started.stderr.strip().startswith("adsync will not start: SECRET_KEY: ")


def test_the_laptop_default_emulator_mode_with_debug_still_starts():
    assert manage("check").returncode == 0


def test_debug_is_off_by_default_outside_emulator_mode():
    shown = python("from django.conf import settings; print(settings.DEBUG, settings.SESSION_COOKIE_SECURE)",
                   **PRODUCTION)

    assert shown.stdout.split() == ["False", "True"], shown.stderr


def test_the_documented_production_environment_passes_check_deploy_with_nothing_to_report():
    checked = manage("check", "--deploy", "--fail-level", "DEBUG", **documented_production_environment())

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "System check identified no issues (0 silenced)."


def test_the_proxy_https_header_is_read_from_the_environment():
    shown = python("from django.conf import settings; print(settings.SECURE_PROXY_SSL_HEADER)",
                   SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https", **PRODUCTION)

    assert shown.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https')"


# --- /demo/ and /emulator/ outside emulator mode ---------------------------------------------------------

def test_the_demo_and_the_emulator_are_neither_installed_nor_routed_in_production_mode():
    script = """
from django.apps import apps
from django.test import Client
client = Client()
print(apps.is_installed("emulator"))
for path in ("/emulator/", "/emulator/click/", "/emulator/oauth2/v2.0/authorize", "/demo/"):
    print(path, client.get(path).status_code)
"""
    shown = python(script, ALLOWED_HOSTS="testserver", **PRODUCTION)

    assert shown.stdout.split() == ["False", "/emulator/", "404", "/emulator/click/", "404",
                                    "/emulator/oauth2/v2.0/authorize", "404", "/demo/", "404"], shown.stderr


# --- The token encryption key derived from the public SECRET_KEY ------------------------------------------

def raw_refresh_token(conn: Connection) -> str:
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT refresh_token FROM adsync_connection WHERE id = %s", [conn.pk])
        return cursor.fetchone()[0]


def plant(conn: Connection, ciphertext: str) -> None:
    with db_connection.cursor() as cursor:
        cursor.execute("UPDATE adsync_connection SET refresh_token = %s WHERE id = %s", [ciphertext, conn.pk])


OWN_OLD_KEY = "an-old-installations-own-key-" + "x" * 30


@pytest.mark.django_db
@pytest.mark.parametrize("old_secret_key, new_secret_key", [
    (DEV_SECRET_KEY, "a-new-secret-key-" + "y" * 40),  # production ran on the public key: it must change now
    (OWN_OLD_KEY, OWN_OLD_KEY),  # an installation with a key of its own keeps it until rotate_encryption has run
], ids=["written-under-the-public-key", "written-under-its-own-key"])
def test_moving_to_an_encryption_key_keeps_old_tokens_readable_until_rotate_encryption_retires_the_derived_key(
        settings, site, make_connection, old_secret_key, new_secret_key):
    settings.SECRET_KEY, settings.ADSYNC_ENCRYPTION_KEYS = old_secret_key, []
    conn = make_connection(site, refresh_token="refresh-written-long-ago")
    new_key = Fernet.generate_key().decode()
    settings.SECRET_KEY, settings.ADSYNC_ENCRYPTION_KEYS = new_secret_key, [new_key]

    assert Connection.objects.get(pk=conn.pk).refresh_token == "refresh-written-long-ago"  # read through the fallback
    call_command("rotate_encryption", stdout=open(os.devnull, "w"))

    assert Fernet(new_key.encode()).decrypt(raw_refresh_token(conn).encode()) == b"refresh-written-long-ago"
    assert crypto.derived_key_retired()
    planted = Fernet(crypto.derive_key(DEV_SECRET_KEY).encode()).encrypt(b"an-attackers-refresh-token").decode()
    plant(conn, planted)
    with pytest.raises(InvalidToken):
        Connection.objects.get(pk=conn.pk)  # a key anyone can derive decrypts nothing any more


@pytest.mark.django_db
def test_before_rotate_encryption_new_tokens_are_written_with_the_new_key_only(settings, site, make_connection):
    new_key = Fernet.generate_key().decode()
    settings.SECRET_KEY, settings.ADSYNC_ENCRYPTION_KEYS = "a-new-secret-key-" + "y" * 40, [new_key]

    conn = make_connection(site, refresh_token="fresh-token")

    assert Fernet(new_key.encode()).decrypt(raw_refresh_token(conn).encode()) == b"fresh-token"
    assert not crypto.derived_key_retired()  # nothing was rotated yet: the fallback stays for older rows
