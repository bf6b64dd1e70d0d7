"""Liveness probe for a Celery worker: exits 0 while its heartbeat file is fresh.

    python -m workers.liveness [--max-age SECONDS]

The worker touches the file from its own event loop (portal.celery.Heartbeat) only while it
is connected to the broker, so a hung or disconnected worker fails this probe.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.liveness")
    parser.add_argument("--max-age", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument(
        "--file",
        default=os.environ.get("WORKER_HEARTBEAT_FILE", "/tmp/worker-heartbeat"),  # nosec B108 # the container's own emptyDir
        help="heartbeat file (default $WORKER_HEARTBEAT_FILE or /tmp/worker-heartbeat)",
    )
    args = parser.parse_args(argv)
    try:
        age = time.time() - Path(args.file).stat().st_mtime
    except FileNotFoundError:
        print(f"unhealthy: no heartbeat file at {args.file}", file=sys.stderr)
        return 1
    if age > args.max_age:
        print(
            f"unhealthy: last heartbeat {age:.0f} s ago (limit {args.max_age:.0f} s)",
            file=sys.stderr,
        )
        return 1
    print(f"healthy: last heartbeat {age:.1f} s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())
