#!/usr/bin/env python3
"""adsync's two commands, needing nothing but Python 3.11:

    python3 dev.py run    # web server + django-q2 worker, SQLite, emulator, demo data [--reset-admin]
    python3 dev.py test   # the whole test suite (DATABASE_URL selects PostgreSQL)
    python3 dev.py lint   # ruff and the import contracts (pyproject.toml), as CI runs them

Both create .venv and install the project (with its dev extra) when pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".adsync-deps"


def sh(*args: str | Path, **kwargs) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], cwd=ROOT, check=True, **kwargs)


def ensure_venv() -> None:
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"adsync needs Python 3.11 (this is {sys.version.split()[0]}); run: python3.11 dev.py ...")
    if not PY.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text() != wanted:
        sh(PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", ".[dev]")
        STAMP.write_text(wanted)


def ensure_browser() -> None:
    """The snippet's end-to-end tests drive Debian's Chromium (no browser download)."""
    if shutil.which("chromium") or os.environ.get("ADSYNC_SKIP_BROWSER_INSTALL"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        sh("apt-get", "update", "-qq")
        sh("apt-get", "install", "-y", "-qq", "chromium")
    else:
        print("chromium not found: browser tests will be skipped (apt-get install chromium)", flush=True)


def run(extra: list[str]) -> None:
    """Migrate, seed (idempotent), then the web server and, once it answers, the worker.

    The web server hosts the emulator the worker calls, so the worker starts only after the server
    answers: its first insights sync and goal refresh then reach Microsoft's stand-in, and the first
    start shows a healthy card. `--reset-admin` gives the demo admin a new password (printed once).
    """
    unknown = [arg for arg in extra if arg != "--reset-admin"]
    if unknown:
        sys.exit(f"dev.py run: unknown option {unknown[0]} (only --reset-admin)")
    ensure_venv()
    manage = [PY, "manage.py"]
    sh(*manage, "migrate", "--noinput")
    sh(*manage, "setup_schedules")
    sh(*manage, "seed_demo", *extra)
    addr = os.environ.get("ADSYNC_BIND", "127.0.0.1:8000")
    server = subprocess.Popen([str(PY), "manage.py", "runserver", addr], cwd=ROOT)
    worker = None
    try:
        if wait_for_server(f"http://{addr}/t/v1/adsync.js", server):
            worker = subprocess.Popen([str(PY), "manage.py", "qcluster"], cwd=ROOT)
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for process in (worker, server):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()


def wait_for_server(url: str, server: subprocess.Popen | None = None, timeout: float = 120.0) -> bool:
    """True once `url` answers (any HTTP status); False if the server process ended or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            return False
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return True
        except urllib.error.HTTPError:
            return True  # it answered
        except OSError:
            time.sleep(0.2)
    return False


def test(extra: list[str]) -> None:
    ensure_venv()
    ensure_browser()
    result = subprocess.run([str(PY), "-m", "pytest", *extra], cwd=ROOT)
    sys.exit(result.returncode)


def lint() -> None:
    ensure_venv()
    bin_dir = VENV / "bin"
    sh(bin_dir / "ruff", "check", ".")
    sh(bin_dir / "lint-imports")


def main() -> None:
    command, extra = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if command == "run":
        run(extra)
    elif command == "test":
        test(extra)
    elif command == "lint":
        lint()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
