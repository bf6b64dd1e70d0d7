"""The processes themselves: `make run` (web, worker, beat, live, simulator), the local services
runner, the worker's liveness probe."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import requests

from tests.support import BASE_DIR, PYTHON, celery_worker, stop_process_group, wait_for

pytestmark = pytest.mark.slow

# The pages make run's summary names; each answers 200 once it is printed.
PAGES = ("Home", "API docs", "Customer login")

# What a fresh shell has: none of the URLs the test session set for itself.
SESSION_ONLY = (
    "REDIS_URL",
    "MONGODB_URI",
    "CELERY_BROKER_URL",
    "DATABASE_URL",
    "DEBUG",
    "FABRIKAM_IGNORE_LOCAL_SERVICES_FILE",
    "SECURE_SSL_REDIRECT",
    "DJANGO_SETTINGS_MODULE",
    "PUBLIC_BASE_URL",
    "MAKEFLAGS",
    "MAKELEVEL",
    "MFLAGS",
)


def fresh_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in SESSION_ONLY}


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def liveness(heartbeat: Path, max_age: float) -> int:
    return subprocess.run(
        [PYTHON, "-m", "workers.liveness", "--file", str(heartbeat), "--max-age", str(max_age)],
        cwd=BASE_DIR,
        capture_output=True,
    ).returncode


def test_worker_liveness_probe_detects_a_hung_worker(
    process_env: dict[str, str], tmp_path: Path
) -> None:
    heartbeat = Path(process_env["WORKER_HEARTBEAT_FILE"])
    env = {**process_env, "WORKER_HEARTBEAT_INTERVAL": "0.5"}
    with celery_worker(env, log=tmp_path / "worker.log") as worker:
        wait_for(lambda: liveness(heartbeat, 3) == 0, timeout=60, what="a live worker")

        os.kill(worker.pid, signal.SIGSTOP)  # the worker's main loop hangs
        try:
            wait_for(lambda: liveness(heartbeat, 3) == 1, timeout=15, what="the hang detected")
        finally:
            os.kill(worker.pid, signal.SIGCONT)

        wait_for(lambda: liveness(heartbeat, 3) == 0, timeout=15, what="the worker live again")


def test_local_services_runner_starts_and_stops_redis_and_mongodb(tmp_path: Path) -> None:
    script = (
        "import os; from devtools.localservices import ping; "
        "assert ping('redis', os.environ['REDIS_URL']); "
        "assert ping('mongodb', os.environ['MONGODB_URI']); "
        "print(os.environ['REDIS_URL'], os.environ['MONGODB_URI'])"
    )
    result = subprocess.run(
        [PYTHON, "-m", "devtools.localservices", "run", "--", PYTHON, "-c", script],
        cwd=BASE_DIR,
        env=fresh_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    redis_url, mongo_uri = result.stdout.strip().splitlines()[-1].split()
    from devtools.localservices import ping

    for name, url in (("redis", redis_url), ("mongodb", mongo_uri)):
        with pytest.raises(Exception):  # noqa: B017 - any connection error will do
            ping(name, url)


def summary_of(log: Path) -> dict[str, list[str]]:
    """The block make run prints once every process answers: label -> words after it."""
    text = log.read_text()
    assert text.count("Fabrikam Drone Delivery is up: every process answers.") == 1, text
    block = text.split("every process answers.", 1)[1].split("\n\n", 2)[1]
    rows = (line.strip().split(":", 1) for line in block.splitlines())
    return {label: rest.split() for label, rest in rows}


def free_port_pair() -> int:
    """A port P with P and P + 1 free, below the kernel's range of ephemeral ports. make run
    serves web on P and live on P + 1, and live binds ~20 s after this (after the migrations):
    an ephemeral port handed out meanwhile to any outgoing connection could be P + 1 (it was
    once, and live stopped with "address already in use"); a port below that range can only be
    taken by another listener."""
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    lowest = int(ranges.read_text().split()[0]) if ranges.exists() else 32768
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(20000, lowest - 1)
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise AssertionError(f"no two free ports in a row between 20000 and {lowest}")


def test_make_run_serves_ready_and_leaves_nothing_behind(tmp_path: Path) -> None:
    port = free_port_pair()
    log = tmp_path / "make-run.log"
    started = time.monotonic()
    with log.open("wb") as out:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"PORT={port}"],
            cwd=BASE_DIR,
            env=fresh_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    tree: dict[int, psutil.Process] = {}
    try:
        wait_for(
            lambda: "every process answers" in log.read_text(),
            timeout=180,
            what=f"make run's summary, every process up on port {port} (log: {log})",
        )
        elapsed = time.monotonic() - started
        # Printed once every process answers: no URL of the summary is a refused connection.
        base = f"http://127.0.0.1:{port}"
        summary = summary_of(log)
        assert summary["Home"] == [f"{base}/"]
        assert summary["Admin"][:4] == [f"{base}/admin/", "admin", "/", "fabrikam-demo"]
        assert summary["API docs"] == [f"{base}/api/v1/docs/"]
        assert summary["Customer login"][1:4] == ["customer@fabrikam.example", "/", "fabrikam-demo"]
        assert summary["Business login"][1:4] == ["business@fabrikam.example", "/", "fabrikam-demo"]
        assert summary["Live feeds"] == [f"http://127.0.0.1:{port + 1}/live/"]
        for url in (base + "/healthz/ready", *(summary[page][0] for page in PAGES)):
            assert http_status(url) == 200, url
        for child in psutil.Process(make.pid).children(recursive=True):
            tree[child.pid] = child
        names = " ".join(" ".join(p.cmdline()) for p in tree.values())
        expected_processes = (
            "gunicorn",
            "celery -A portal worker",
            "celery -A portal beat",
            "uvicorn portal.asgi:application",
        )
        for expected in (*expected_processes, "nx-27017"):
            assert expected in names, f"{expected} is not running under make run"

        # Another terminal, as the README has it (nothing exported): manage.py talks to the
        # same services, runs in make run's development mode and links to make run's port,
        # from .local/services.env.
        shell = subprocess.run(
            [PYTHON, "manage.py", "shell", "-c",
             "from django.conf import settings; "
             "print(settings.REDIS_URL, settings.DEBUG, settings.PUBLIC_BASE_URL)"],
            cwd=BASE_DIR, env=fresh_env(),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert shell.returncode == 0, shell.stderr
        redis_url, debug, public_base_url = shell.stdout.strip().splitlines()[-1].split()
        services = (BASE_DIR / ".local" / "services.env").read_text()
        assert f"REDIS_URL={redis_url}" in services
        assert (debug, public_base_url) == ("True", base)

        # The printed operator signs in to the admin.
        admin = requests.Session()
        login_page = admin.get(f"{base}/admin/login/", timeout=10)
        assert login_page.status_code == 200
        signed_in = admin.post(
            f"{base}/admin/login/?next=/admin/",
            data={
                "username": summary["Admin"][1],
                "password": summary["Admin"][3],
                "csrfmiddlewaretoken": admin.cookies["csrftoken"],
                "next": "/admin/",
            },
            headers={"Referer": f"{base}/admin/login/"},
            timeout=10,
        )
        assert signed_in.url == f"{base}/admin/", signed_in.text

        # The whole system works: a delivery through the printed demo key gets a drone.
        headers = {"Authorization": f"Api-Key {summary['API key'][0]}"}
        created = requests.post(
            f"http://127.0.0.1:{port}/api/v1/deliveries",
            json={
                "pickup": {"lat": 47.6097, "lon": -122.3422},
                "dropoff": {"lat": 47.6205, "lon": -122.3493},
                "package": {"size": "small", "weight_kg": 2},
            },
            headers=headers,
            timeout=10,
        )
        assert created.status_code == 202, created.text
        # Its tracking link points at the port make run serves on.
        assert created.json()["tracking_url"].startswith(f"{base}/track/")
        status_url = f"http://127.0.0.1:{port}{created.headers['Location']}/status"
        wait_for(
            lambda: (
                requests.get(status_url, headers=headers, timeout=5).json()["status"] == "assigned"
            ),
            timeout=60,
            what="the demo delivery assigned by make run's worker",
        )
        # The live process, on the next port, follows the same delivery (its URL in the banner).
        live_port = port + 1
        assert f"http://127.0.0.1:{live_port}/live/" in log.read_text()
        wait_for(
            lambda: http_status(f"http://127.0.0.1:{live_port}/healthz/live") == 200,
            timeout=30,
            what=f"the live process on port {live_port}",
        )
        feed_url = f"http://127.0.0.1:{live_port}/live/deliveries/{created.json()['id']}"
        with requests.get(feed_url, headers=headers, stream=True, timeout=10) as feed:
            assert feed.status_code == 200
            assert feed.headers["Content-Type"].startswith("text/event-stream")
            first = next(line for line in feed.iter_lines() if line.startswith(b"data: "))
        assert json.loads(first.removeprefix(b"data: "))["status"]
        # The tracking page (web) follows the feed on the live port, which lets its origin read.
        token = created.json()["tracking_url"].rsplit("/", 1)[1]
        page = requests.get(f"http://127.0.0.1:{port}/track/{token}", timeout=10).text
        track_feed = f"http://127.0.0.1:{live_port}/live/track/{token}"
        assert f'data-live-url="{track_feed}"' in page
        origin = f"http://127.0.0.1:{port}"
        with requests.get(track_feed, headers={"Origin": origin}, stream=True, timeout=10) as feed:
            assert feed.headers["Access-Control-Allow-Origin"] == origin

        make.send_signal(signal.SIGTERM)
        make.wait(timeout=60)
        _, alive = psutil.wait_procs(list(tree.values()), timeout=30)
        assert not alive, f"left running: {[' '.join(p.cmdline()) for p in alive]}"
        assert not (BASE_DIR / ".local" / "services.env").exists()
        print(f"make run was ready in {elapsed:.1f} s")
    finally:
        stop_process_group(make)
        for process in tree.values():
            if process.is_running():
                process.kill()
