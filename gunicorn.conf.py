"""gunicorn's settings for adsync: `gunicorn config.wsgi` reads this file from the project root.

Threaded workers (gthread): a snippet hit spends most of its time waiting for its commit, and
the threads of one process share that commit (tracking/group_commit.py). Measured in
docs/performance.md. Override any setting on the command line or in GUNICORN_CMD_ARGS
(e.g. GUNICORN_CMD_ARGS="--threads 16"); WEB_CONCURRENCY sets the number of processes.
"""

import multiprocessing
import os

worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count()))
threads = 8
backlog = 2048
