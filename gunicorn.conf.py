"""gunicorn's settings for adsync: `gunicorn config.wsgi` reads this file from the project root.

gevent workers, one process per core: a snippet hit spends most of its time waiting for its
commit, and under gevent every waiting request is a cheap greenlet instead of an OS thread
fighting the others for the GIL, so the hits of one process gather into large shared commits
(tracking/group_commit.py). Measured against threaded and sync workers in docs/performance.md.
psycopg 3 (≥ 3.1.14) and requests cooperate with gevent once gunicorn has patched the process.

Every request being a greenlet with its own Django connection, the web processes take their
connections from a bounded pool (DATABASE_POOL_SIZE per process, see config/settings.py).

Override any setting on the command line or in GUNICORN_CMD_ARGS (e.g. GUNICORN_CMD_ARGS=
"--worker-class gthread --threads 8"); WEB_CONCURRENCY sets the number of processes.
"""

import multiprocessing
import os

worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_connections = 1000  # open client connections per process (gunicorn's default)
threads = 8  # used only if the worker class is overridden with gthread
backlog = 2048
raw_env = [f"DATABASE_POOL_SIZE={os.environ.get('DATABASE_POOL_SIZE') or 10}"]
