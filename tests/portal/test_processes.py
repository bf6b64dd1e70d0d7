"""The processes themselves: `make run` (web, worker, beat, live, simulator), the local services
runner, the worker's liveness probe."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import requests

from portal.localservices import free_port
from tests.support import BASE_DIR, PYTHON, celery_worker, stop_process_group, wait_for

pytestmark = pytest.mark.slow

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
        "import os; from portal.localservices import ping; "
        "assert ping('redis', os.environ['REDIS_URL']); "
        "assert ping('mongodb', os.environ['MONGODB_URI']); "
        "print(os.environ['REDIS_URL'], os.environ['MONGODB_URI'])"
    )
    result = subprocess.run(
        [PYTHON, "-m", "portal.localservices", "run", "--", PYTHON, "-c", script],
        cwd=BASE_DIR,
        env=fresh_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    redis_url, mongo_uri = result.stdout.strip().splitlines()[-1].split()
    from portal.localservices import ping

    for name, url in (("redis", redis_url), ("mongodb", mongo_uri)):
        with pytest.raises(Exception):  # noqa: B017 - any connection error will do
            ping(name, url)


def test_make_run_serves_ready_and_leaves_nothing_behind(tmp_path: Path) -> None:
    port = free_port()
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
            lambda: http_status(f"http://127.0.0.1:{port}/healthz/ready") == 200,
            timeout=120,
            what=f"make run ready on port {port} (log: {log})",
        )
        elapsed = time.monotonic() - started
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
        # same services, and runs in make run's development mode, from .local/services.env.
        shell = subprocess.run(
            [PYTHON, "manage.py", "shell", "-c",
             "from django.conf import settings; print(settings.REDIS_URL)"],
            cwd=BASE_DIR, env=fresh_env(),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        services = (BASE_DIR / ".local" / "services.env").read_text()
        assert f"REDIS_URL={shell.stdout.strip().splitlines()[-1]}" in services

        assert http_status(f"http://127.0.0.1:{port}/admin/login/") == 200

        # The whole system works: a delivery through the printed demo key gets a drone.
        key = re.search(r"business API key \(.*\): (\S+)", log.read_text())
        assert key, log.read_text()
        headers = {"Authorization": f"Api-Key {key.group(1)}"}
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
