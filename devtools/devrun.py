"""What `make run` runs once the local services are up: migrate, demo data, every process, and,
once every process answers, a summary of where to go and whom to sign in as.

honcho supervises web, worker, beat, live and simulator. The signal `devtools.localservices run`
forwards on Ctrl-C or SIGTERM is passed on to honcho, which stops them all; this process ends
with it.

The live process (server-sent events) listens on the next port after the web one; the tracking
page is told to reach it there, and the live process to let that page's origin read it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
LOCAL = BASE_DIR / ".local"
# How long the processes may take to answer before the summary says which do not.
READY_TIMEOUT_SECONDS = 180.0


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  # nosec B310 # http to loopback
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def touched_since(pattern: str, since: float) -> bool:
    """A file matching `pattern` in .local/ was written since `since` (a heartbeat, a schedule)."""
    return any(path.stat().st_mtime >= since for path in LOCAL.glob(pattern))


def wait_until_every_process_answers(
    checks: dict[str, Callable[[], bool]], supervisor: subprocess.Popen[bytes], timeout: float
) -> list[str]:
    """Poll until every check passes, the supervisor exits or the time is up; what still fails."""
    waiting = dict(checks)
    deadline = time.monotonic() + timeout
    while waiting and supervisor.poll() is None and time.monotonic() < deadline:
        waiting = {name: check for name, check in waiting.items() if not check()}
        if waiting:
            time.sleep(0.5)
    return list(waiting)


def summary(port: str, live_port: str, demo: str, not_answering: list[str]) -> str:
    if not_answering:
        status = (
            f"Fabrikam Drone Delivery started, but after {READY_TIMEOUT_SECONDS:.0f} s "
            f"{', '.join(not_answering)} still do not answer: see their lines above."
        )
    else:
        status = "Fabrikam Drone Delivery is up: every process answers."
    rule = "=" * 78
    return "\n".join(
        [
            "",
            rule,
            status,
            "",
            *(f"  {line}" for line in demo.splitlines()),
            f"  {'Live feeds:':<16}http://127.0.0.1:{live_port}/live/",
            "",
            "Try it (KEY is the API key above; the answer's id is the delivery's):",
            f"  curl -s -X POST http://127.0.0.1:{port}/api/v1/deliveries \\",
            '    -H "Authorization: Api-Key $KEY" -H "Content-Type: application/json" \\',
            """    -d '{"pickup": {"lat": 47.6097, "lon": -122.3422}, "dropoff": {"lat": 47.6205,"""
            """ "lon": -122.3493}, "package": {"size": "small", "weight_kg": 2}}'""",
            f"  curl -N http://127.0.0.1:{live_port}/live/deliveries/$ID \\",
            '    -H "Authorization: Api-Key $KEY"',
            "",
            "`.venv/bin/python manage.py <command>` in another terminal uses this run's services.",
            "Press Ctrl-C to stop every process.",
            rule,
            "",
        ]
    )


def main() -> int:
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "WORKER_HEARTBEAT_FILE": str(LOCAL / "worker-heartbeat"),
        "SIMULATOR_HEARTBEAT_FILE": str(LOCAL / "simulator-heartbeat"),
        "PYTHONUNBUFFERED": "1",
    }
    port = env.get("WEB_PORT", "8000")
    live_port = str(int(port) + 1)
    env["LIVE_PORT"] = live_port
    env["LIVE_BASE_URL"] = f"http://127.0.0.1:{live_port}"
    env["LIVE_ALLOW_ORIGIN"] = f"http://127.0.0.1:{port},http://localhost:{port}"
    # Links in answers, pages and emails point at the port this run serves on (the Makefile
    # sets it already, so that .local/services.env hands it to manage.py in other terminals).
    env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{port}")
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], check=True, env=env, cwd=BASE_DIR)
    demo = subprocess.run(
        # stdout only: should it fail, its error still reaches the terminal.
        [*manage, "load_demo"],
        check=True,
        env=env,
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    print(f"Starting web, worker, beat, live and simulator on http://127.0.0.1:{port}/ ...")
    sys.stdout.flush()

    # The heartbeats of a previous run must not pass for this one's.
    for name in ("worker-heartbeat", "simulator-heartbeat"):
        (LOCAL / name).unlink(missing_ok=True)
    started = time.time() - 1  # file times may be a little coarser than the clock
    honcho = str(bin_dir / "honcho")
    supervisor = subprocess.Popen(
        [honcho, "start", "-f", str(BASE_DIR / "Procfile")], env=env, cwd=BASE_DIR
    )

    def forward(signum: int, _frame: object) -> None:
        if supervisor.poll() is None:
            supervisor.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)

    checks: dict[str, Callable[[], bool]] = {
        "web": lambda: answers(f"http://127.0.0.1:{port}/healthz/ready"),
        "live": lambda: answers(f"http://127.0.0.1:{live_port}/healthz/ready"),
        "worker": lambda: touched_since("worker-heartbeat", started),
        "beat": lambda: touched_since("celerybeat-schedule*", started),
        "simulator": lambda: touched_since("simulator-heartbeat", started),
    }
    not_answering = wait_until_every_process_answers(checks, supervisor, READY_TIMEOUT_SECONDS)
    if supervisor.poll() is None:
        print(summary(port, live_port, demo.stdout, not_answering), flush=True)
    return supervisor.wait()


if __name__ == "__main__":
    sys.exit(main())
