"""adsync's production web server for tests: gunicorn with gunicorn.conf.py (gevent workers) on the test database.

PostgreSQL only: gunicorn's processes must share the database with the test, and a SQLite test
database lives in the test process's memory. The environment is a production one (DEBUG off, a
secret key and an encryption key of its own), served over plain HTTP on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from cryptography.fernet import Fernet
from django.db import connection as db_connection

ROOT = Path(__file__).resolve().parents[1]
TEST_SECRET_KEY = "test-only-" + "k" * 60
TEST_ENCRYPTION_KEY = Fernet.generate_key().decode()


def database_url(application_name: str) -> str:
    db = db_connection.settings_dict
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST']}:{db['PORT']}/{db['NAME']}?application_name={application_name}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def production_env(application_name: str, **extra: str) -> dict[str, str]:
    """What a production deployment sets, for plain HTTP on 127.0.0.1 (no TLS in tests)."""
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "false",
            "SECRET_KEY": TEST_SECRET_KEY, "ADSYNC_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY,
            "SESSION_COOKIE_SECURE": "false", "CSRF_COOKIE_SECURE": "false",
            "DATABASE_URL": database_url(application_name), **extra}


@contextlib.contextmanager
def gunicorn(env: dict[str, str]) -> Iterator[str]:
    """gunicorn as production runs it (`gunicorn config.wsgi`, reading gunicorn.conf.py); yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--graceful-timeout", "5", "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/t/v1/adsync.js", timeout=2).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)  # its pooled connections must be gone before the test database is dropped


def server_connections(application_name: str) -> list[int]:
    """The backend pids of the server's database connections."""
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [application_name])
        return [row[0] for row in cursor.fetchall()]


def kill_server_connections(application_name: str) -> int:
    """What a database restart does to the server: every connection it holds is ended. Returns how many."""
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                       [application_name])
        return cursor.fetchone()[0]
