"""The README's production steps, run as written on PostgreSQL with DEBUG=false: a new database, migrations,
collectstatic, schedules, roles, the first staff user, gunicorn answering over HTTP with the admin's styles
served, and the worker running the schedules.

Only what cannot be done on a test machine is adapted, and said so: the database gets a unique name, the
project's own virtualenv stands in for `pip install .`, gunicorn binds a free port (GUNICORN_CMD_ARGS),
createsuperuser reads its answers from DJANGO_SUPERUSER_* (--noinput), collectstatic writes to a temporary
STATIC_ROOT, and requests carry the public host name in their Host header and the TLS proxy's
X-Forwarded-Proto (the cookies adsync marks Secure then go back, as a visitor's browser on HTTPS sends them).
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.db import connection as db_connection

ROOT = Path(__file__).resolve().parents[1]
HOST = "adsync.example.com"
pytestmark = [
    pytest.mark.skipif(db_connection.vendor != "postgresql", reason="the production steps are for PostgreSQL"),
    pytest.mark.skipif(shutil.which("createdb") is None, reason="PostgreSQL's client tools are not installed"),
]


def production_steps() -> list[str]:
    """The README's production block, one command per line, comments dropped."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- production-steps -->", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def database():
    """A name for the README's `createdb adsync`, dropped afterwards."""
    name = f"adsync_readme_{uuid.uuid4().hex[:8]}"
    settings = db_connection.settings_dict
    pg = {"PGHOST": settings["HOST"] or "127.0.0.1", "PGPORT": str(settings["PORT"] or 5432),
          "PGUSER": settings["USER"] or "postgres"}
    yield name, pg
    subprocess.run(["dropdb", "--if-exists", "--force", name], env={**os.environ, **pg}, check=False)


def test_the_readme_production_steps_work_as_written(database, tmp_path):
    name, pg = database
    steps = production_steps()
    long_running = steps[-2:]
    assert long_running == [".venv/bin/gunicorn config.wsgi", ".venv/bin/python manage.py qcluster"]
    port = free_port()
    script = []
    for step in steps[:-2]:
        step = step.replace("createdb adsync", f"createdb {name}").replace("/adsync ", f"/{name} ")
        step = step.replace("postgres://postgres@127.0.0.1:5432", f"postgres://{pg['PGUSER']}@{pg['PGHOST']}:{pg['PGPORT']}")
        if step.startswith("python3 -m venv"):
            continue  # the project's virtualenv, already installed with the same dependencies
        if step.endswith("createsuperuser"):
            step += " --noinput"
        script.append(step.replace(".venv/bin/python", sys.executable))
    env = {**os.environ, **pg, "STATIC_ROOT": str(tmp_path / "static"), "DJANGO_SUPERUSER_USERNAME": "ops",
           "DJANGO_SUPERUSER_EMAIL": "ops@example.com", "DJANGO_SUPERUSER_PASSWORD": "a long staff password 42"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    # The exports are the README's own; the last line hands the resulting environment to the test.
    exported = tmp_path / "environment"
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join([*script, f"env -0 > {exported}"])],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    env = dict(item.split("=", 1) for item in exported.read_text().split("\0") if "=" in item)
    assert env["DEBUG"] == "false" and env["DATABASE_URL"].endswith(f"/{name}")
    env["GUNICORN_CMD_ARGS"] = f"--bind 127.0.0.1:{port} --workers 1"

    gunicorn = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "config.wsgi"], cwd=ROOT, env=env,
                                start_new_session=True)
    worker = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        browser = Browser(base)
        browser.wait_until_up(gunicorn)

        login = browser.get("/admin/")
        assert login.url.startswith(f"{base}/accounts/login/")
        admin = browser.sign_in(login, "ops", "a long staff password 42")
        assert "Microsoft Ads offline conversions" in admin

        stylesheets = re.findall(r'<link rel="stylesheet" href="([^"]+)"', admin)
        assert stylesheets, "the admin links no stylesheet"
        for href in stylesheets:
            css = browser.open(href)
            assert css.status == 200 and css.headers["Content-Type"].startswith("text/css"), href
            assert len(css.read()) > 100

        assert _worker_ran_a_schedule(env["DATABASE_URL"], worker), "qcluster ran no scheduled job"
    finally:
        for process in (worker, gunicorn):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in (worker, gunicorn):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _worker_ran_a_schedule(database_url: str, worker: subprocess.Popen, timeout: float = 120) -> bool:
    import psycopg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.poll() is None:
        with psycopg.connect(database_url) as conn:
            done = conn.execute("SELECT count(*) FROM django_q_task WHERE success").fetchone()[0]
            scheduled = conn.execute("SELECT count(*) FROM django_q_schedule WHERE task IS NOT NULL").fetchone()[0]
        if done and scheduled:
            return True
        time.sleep(1)
    return False


class VisitorOverHttps(http.cookiejar.DefaultCookiePolicy):
    """The visitor talks HTTPS to the TLS proxy, so their browser sends the Secure cookies adsync sets."""

    def return_ok_secure(self, cookie, request) -> bool:
        return True


class Browser:
    """Plain HTTP with cookies, sending the public host name and the HTTPS header as the proxy would."""

    def __init__(self, base: str):
        self.base = base
        jar = http.cookiejar.CookieJar(policy=VisitorOverHttps())
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def open(self, path: str, data: dict | None = None):
        url = path if path.startswith("http") else self.base + path
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(url, body, headers={"Host": HOST, "Referer": f"https://{HOST}/",
                                                             "X-Forwarded-Proto": "https"})
        return self.opener.open(request, timeout=30)

    def get(self, path: str):
        return self.open(path)

    def wait_until_up(self, process: subprocess.Popen, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.open("/t/v1/adsync.js").close()
                return
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)

    def sign_in(self, login_page, username: str, password: str) -> str:
        html = login_page.read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
        answer = self.open(login_page.url, {"csrfmiddlewaretoken": token, "login": username, "password": password})
        return answer.read().decode()
