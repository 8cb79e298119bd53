#!/usr/bin/env python
"""Fault: scale-out on one machine. Two gunicorn instances and two worker clusters, one PostgreSQL.

Starts two gunicorn instances with the production configuration (gunicorn.conf.py, gevent) on
two ports and two django-q2 clusters (`manage.py qcluster`, each with --q-workers workers), all
separate processes against one PostgreSQL database, with a recording Microsoft stand-in on
loopback (bench/faultkit.py). Then, from --clients threads, for each of --visitors visitors:

- the landing's click (msclkid) to one instance, and once answered
- the purchase (an order id, no msclkid: attributed through the visitor's click) to the other;
- every fifth purchase again, to the first instance (the snippet's retry after a lost answer).

Meanwhile it queues drains and flushes through the broker (`jobs.enqueue`, as the schedules and
admin buttons do) so both clusters store and send at the same time as the traffic. Passes when
every answered hit is stored once (one click per msclkid, one conversion per order id, each
attributed to its visitor's click), the inbox is empty with no failed hit, every conversion was
sent to Microsoft exactly once with the row saying sent, both instances answered traffic and both
clusters ran jobs. Exits 1 on any violation.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/adsync_bench_scale .venv/bin/python bench/fault_scale_out.py
    … --broker redis   # or orm; default: both, one after the other (Redis db 8 of 127.0.0.1:6379)

The database is created if missing and emptied: never point it at a database you care about.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import faultkit  # noqa: E402  (needs the project root on the path)

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/adsync_bench_scale"
DEFAULT_REDIS = "redis://127.0.0.1:6379/8"
ORIGIN = "https://shop.example.com"
SITE_KEY = "pk_scaleout"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen, group: bool) -> None:
    """gunicorn: its whole process group; qcluster: its main process, which stops its own (both are
    session leaders, so whatever is left is killed as a group after 30 s)."""
    try:
        if group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    except ProcessLookupError:
        pass


class Traffic:
    """The visitors' hits, spread over the two instances; every answer's status, by kind."""

    def __init__(self, ports: list[int], visitors: int, clients: int, run: str):
        self.ports, self.visitors, self.clients, self.run = ports, visitors, clients, run
        self.lock = threading.Lock()
        self.statuses: Counter = Counter()
        self.per_port: Counter = Counter()
        self.clicked: set[str] = set()  # msclkids whose click was answered 202
        self.ordered: dict[str, str] = {}  # order id → the visitor's msclkid, for purchases answered 202

    def send(self, conns: dict, port: int, body: dict) -> int:
        for attempt in range(3):
            conn = conns.get(port) or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conns[port] = conn
            try:
                conn.request("POST", "/t/v1/collect", json.dumps(body),
                             {"Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN})
                answer = conn.getresponse()
                answer.read()
                status = answer.status
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                conns.pop(port, None)
                status = 0
                if attempt == 2:
                    break
        with self.lock:
            self.statuses[(body["type"], status)] += 1
            self.per_port[port] += status == 202
        return status

    def visitor(self, conns: dict, i: int) -> None:
        first, second = self.ports[i % 2], self.ports[(i + 1) % 2]
        visitor, msclkid, order = f"v{self.run}-{i}", f"c{self.run}{i:010d}", f"o{self.run}-{i}"
        if self.send(conns, first, {"site": SITE_KEY, "type": "click", "visitorId": visitor, "msclkid": msclkid,
                                    "url": f"{ORIGIN}/?msclkid={msclkid}"}) != 202:
            return
        with self.lock:
            self.clicked.add(msclkid)
        purchase = {"site": SITE_KEY, "type": "conversion", "event": "purchase", "orderId": order,
                    "visitorId": visitor, "value": 49.9, "currency": "USD"}
        answered = self.send(conns, second, purchase) == 202
        if i % 5 == 0:  # the snippet's retry after a lost answer, to the other instance
            answered = (self.send(conns, first, purchase) == 202) or answered
        if answered:
            with self.lock:
                self.ordered[order] = msclkid

    def run_all(self) -> None:
        def client(k: int) -> None:
            conns: dict = {}
            for i in range(k, self.visitors, self.clients):
                self.visitor(conns, i)
            for conn in conns.values():
                conn.close()

        threads = [threading.Thread(target=client, args=(k,)) for k in range(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def prepare() -> None:
    faultkit.fresh_site("Scale-out", SITE_KEY, ORIGIN)


def keep_queueing(stop_event: threading.Event) -> None:
    """What the schedules do every minute and the admin's buttons on demand, several times a second."""
    from django.db import connections
    from django_q.brokers import get_broker

    from adsync import jobs

    broker = get_broker()
    while not stop_event.wait(0.25):
        if broker.queue_size() < 4:  # a job for each free worker, not an ever longer queue
            jobs.enqueue(jobs.drain_inbox_helper, group="adsync:scale-out")
            jobs.enqueue(jobs.flush, group="adsync:scale-out")
    connections.close_all()


def settled(recorder: faultkit.Recorder) -> bool:
    from adsync.models import Hit, Push

    return not Hit.objects.exists() and not Push.objects.exclude(status=Push.SENT).exists()


def verdict(traffic: Traffic, recorder: faultkit.Recorder, logs: dict[str, Path]) -> list[str]:
    from adsync.models import Click, Conversion, Hit, Push

    problems = []
    failed = list(Hit.objects.exclude(error="").values_list("error", flat=True)[:3])
    if Hit.objects.exists():
        problems.append(f"{Hit.objects.count()} hits left in the inbox, e.g. errors {failed}")
    clicks = Counter(Click.objects.values_list("msclkid", flat=True))
    if set(clicks) != traffic.clicked or any(n > 1 for n in clicks.values()):
        problems.append(f"clicks: {len(traffic.clicked)} answered, {sum(clicks.values())} stored "
                        f"({len(set(clicks) - traffic.clicked)} unknown, {len(traffic.clicked - set(clicks))} missing)")
    stored = dict(Conversion.objects.values_list("order_id", "msclkid"))
    if Conversion.objects.count() != len(stored) or set(stored) != set(traffic.ordered):
        problems.append(f"conversions: {len(traffic.ordered)} orders answered, {Conversion.objects.count()} stored")
    misattributed = [order for order, msclkid in traffic.ordered.items() if stored.get(order, msclkid) != msclkid]
    if misattributed:
        problems.append(f"{len(misattributed)} conversions not attributed to their visitor's click, "
                        f"e.g. {misattributed[:3]}")
    statuses = Counter(Push.objects.values_list("status", flat=True))
    if statuses != Counter({Push.SENT: len(traffic.ordered)}):
        problems.append(f"sync log: {dict(statuses)} for {len(traffic.ordered)} orders")
    with recorder.lock:
        received = Counter(item[1] for item in recorder.items)
    twice = [m for m, n in received.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} conversions sent more than once, e.g. {twice[:3]}")
    if set(received) != set(traffic.ordered.values()):
        problems.append(f"Microsoft received {len(received)} distinct conversions for {len(traffic.ordered)} orders")
    if len(traffic.per_port) < 2 or min(traffic.per_port.values()) == 0:
        problems.append(f"202 answers per instance {dict(traffic.per_port)}: not both instances served traffic")
    ran = {name: path.read_text(errors="replace").count(" processing ") for name, path in logs.items()}
    if min(ran.values()) == 0:
        problems.append(f"jobs run per cluster {ran}: not both clusters worked")
    bad = {k: v for k, v in traffic.statuses.items() if k[1] != 202}
    if bad:
        problems.append(f"answers other than 202: {bad}")
    print(f"  jobs run per cluster      {ran}")
    print(f"  202 answers per instance  {dict(traffic.per_port)}")
    print(f"  answers                   {dict(traffic.statuses)}")
    print(f"  stored                    {sum(clicks.values())} clicks, {len(stored)} conversions, {dict(statuses)}")
    print(f"  Microsoft received        {sum(received.values())} conversions in {recorder.requests} requests")
    return problems


def run_one(broker: str, args) -> int:
    recorder = faultkit.Recorder()
    stand_in = faultkit.start_stand_in(recorder)
    if broker == "redis":
        os.environ["REDIS_URL"] = args.redis_url
    else:
        os.environ.pop("REDIS_URL", None)
    faultkit.configure(os.environ.get("DATABASE_URL", DEFAULT_DB), stand_in, lease_seconds=300,
                       batch_size=args.batch_size)
    import logging

    from django.db import connections
    from django_q.brokers import get_broker

    from adsync.conf import conf

    logging.getLogger("django-q").setLevel(logging.WARNING)  # not a line per queued job
    assert conf.task_broker == broker
    prepare()
    get_broker().purge_queue()
    connections.close_all()
    print(f"scale-out run, {broker} broker: 2 gunicorn instances x {args.web_processes} gevent process(es), "
          f"2 clusters x {args.q_workers} worker(s), {args.visitors} visitors from {args.clients} clients "
          f"(load average before: {os.getloadavg()[0]:.1f})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        logs = {f"cluster {n}": Path(tmp) / f"cluster{n}.log" for n in (1, 2)}
        web_log = open(Path(tmp) / "web.log", "ab")
        ports = [free_port(), free_port()]
        webs, clusters = [], []
        stop_event = threading.Event()
        queuer = threading.Thread(target=keep_queueing, args=(stop_event,))
        try:
            web_env = {"WEB_CONCURRENCY": str(args.web_processes), "ALLOWED_HOSTS": "127.0.0.1"}
            webs = [faultkit.start_gunicorn(port, web_log, **web_env) for port in ports]
            clusters = [faultkit.start_cluster(args.q_workers, open(path, "ab")) for path in logs.values()]
            queuer.start()
            started = time.monotonic()
            traffic = Traffic(ports, args.visitors, args.clients, f"{int(time.time()) % 100000:05d}")
            traffic.run_all()
            sent_in = time.monotonic() - started
            deadline = time.monotonic() + args.settle
            while not settled(recorder) and time.monotonic() < deadline:
                time.sleep(0.5)
            print(f"  traffic sent in {sent_in:.1f} s, everything stored and sent "
                  f"{time.monotonic() - started - sent_in:.1f} s later", flush=True)
        finally:
            stop_event.set()
            if queuer.is_alive():
                queuer.join()
            for process in clusters:
                stop(process, group=False)
            for process in webs:
                stop(process, group=True)
            web_log.close()
            connections.close_all()
        problems = verdict(traffic, recorder, logs)
        get_broker().purge_queue()
        for problem in problems:
            print(f"  VIOLATION: {problem}")
            for name, path in logs.items():
                tail = path.read_text(errors="replace").strip().splitlines()[-5:]
                print(f"  {name} log (last lines):\n    " + "\n    ".join(tail))
            break
    print("PASS" if not problems else f"FAIL ({len(problems)} violation(s))", flush=True)
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=["orm", "redis", "both"], default="both")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help=f"for --broker redis, default {DEFAULT_REDIS}")
    parser.add_argument("--visitors", type=int, default=2000, help="default 2,000 (about 4,400 hits)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads, default 16")
    parser.add_argument("--web-processes", type=int, default=1, help="gevent processes per instance, default 1")
    parser.add_argument("--q-workers", type=int, default=2, help="django-q workers per cluster, default 2")
    parser.add_argument("--batch-size", type=int, default=200, help="conversions per Apply call, default 200")
    parser.add_argument("--settle", type=float, default=300, help="seconds to wait for the backlog, default 300")
    args = parser.parse_args()
    if args.broker != "both":
        return run_one(args.broker, args)
    # One process per broker: django-q2 reads its broker from the settings once, at import.
    codes = [subprocess.run([sys.executable, __file__, *sys.argv[1:], "--broker", broker]).returncode
             for broker in ("orm", "redis")]
    print("both brokers: " + ("PASS" if not any(codes) else "FAIL"))
    return 1 if any(codes) else 0


if __name__ == "__main__":
    sys.exit(main())
