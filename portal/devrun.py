"""What `make run` runs once the local services are up: migrate, demo data, then every process.

Replaces itself with honcho (exec), so the signal `portal.localservices run` forwards on
Ctrl-C or SIGTERM reaches the supervisor, which stops web, worker, beat, live and simulator.

The live process (server-sent events) listens on the next port after the web one; the tracking
page is told to reach it there, and the live process to let that page's origin read it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def main() -> None:
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "WORKER_HEARTBEAT_FILE": str(BASE_DIR / ".local" / "worker-heartbeat"),
        "PYTHONUNBUFFERED": "1",
    }
    port = env.get("WEB_PORT", "8000")
    live_port = str(int(port) + 1)
    env["LIVE_PORT"] = live_port
    env["LIVE_BASE_URL"] = f"http://127.0.0.1:{live_port}"
    env["LIVE_ALLOW_ORIGIN"] = f"http://127.0.0.1:{port},http://localhost:{port}"
    # Tracking links in answers and emails point at the port this run serves on.
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
    banner = [
        "",
        f"Fabrikam Drone Delivery is starting on http://127.0.0.1:{port}/",
        f"  operators (Django admin): http://127.0.0.1:{port}/admin/",
        f"  readiness:                http://127.0.0.1:{port}/healthz/ready",
        f"  API docs:                 http://127.0.0.1:{port}/api/v1/docs/",
        f"  live feeds (SSE):         http://127.0.0.1:{live_port}/live/",
        *(f"  {line}" for line in demo.stdout.splitlines()),
        "",
        "Try it:",
        f"  curl -s -X POST http://127.0.0.1:{port}/api/v1/deliveries \\",
        '    -H "Authorization: Api-Key $KEY" -H "Content-Type: application/json" \\',
        """    -d '{"pickup": {"lat": 47.6097, "lon": -122.3422}, "dropoff": {"lat": 47.6205,"""
        """ "lon": -122.3493}, "package": {"size": "small", "weight_kg": 2}}'""",
        "then follow it live (its id is in the answer):",
        f"  curl -N http://127.0.0.1:{live_port}/live/deliveries/$ID \\",
        '    -H "Authorization: Api-Key $KEY"',
        "Press Ctrl-C to stop every process.",
        "",
    ]
    print("\n".join(banner), flush=True)
    honcho = str(bin_dir / "honcho")
    os.execve(honcho, [honcho, "start", "-f", str(BASE_DIR / "Procfile")], env)  # noqa: S606


if __name__ == "__main__":
    main()
