"""Where the time of one request or one workflow goes, layer by layer, in this process.

cProfile over a few hundred calls, without gunicorn or Celery around them (their share is the
difference between these times and the CPU the web and worker processes spent per request).
cProfile slows Python code more than waiting on a socket, so the shares are a guide to which
layer dominates, not exact costs; the total is also timed without the profiler.
"""

from __future__ import annotations

import cProfile
import pstats
import time
from collections.abc import Callable
from typing import Any

# (label, module file suffix, function name): cumulative time of every call of that function.
REQUEST_LAYERS = [
    ("authentication (Redis key cache, sha512)", "businesses/auth.py", "authenticate"),
    ("throttle (Redis INCR)", "businesses/auth.py", "allow_request"),
    ("input serializer", "portal/api.py", "validated"),
    ("delivery_create", "deliveries/services.py", "delivery_create"),
    (
        "  of which the checks (fleet shape, no-fly zones)",
        "deliveries/services.py",
        "delivery_request_check",
    ),
    ("  of which preparing the rows", "portal/db.py", "prepare_insert"),
    (
        "  of which the limit's count and the inserts (one statement)",
        "portal/db.py",
        "execute_together",
    ),
    ("  of which publish after commit", "deliveries/services.py", "outbox_publish"),
    ("    of which Celery send_task", "celery/app/base.py", "send_task"),
    ("output document", "deliveries/api.py", "delivery_document"),
]
WORKFLOW_LAYERS = [
    ("package document (MongoDB upsert)", "packages/services.py", "package_upsert"),
    ("a round (this delivery and new ones)", "deliveries/services.py", "deliveries_assign_round"),
    ("  of which their package documents", "packages/services.py", "packages_upsert"),
    ("  of which the searches", "drones/selectors.py", "drone_plan_best"),
    ("  of which booking the drones", "drones/services.py", "drones_claim"),
    ("  of which the status changes + events", "deliveries/lifecycle.py", "deliveries_assign"),
    ("  of which stage emails recorded", "notifications/services.py", "notifications_record_many"),
    ("one by one (delivery_assign)", "deliveries/services.py", "delivery_assign"),
]


def profile(
    call: Callable[[int], Any], count: int, layers: list[tuple[str, str, str]]
) -> list[str]:
    """Lines: the plain time per call, then each layer's time per call under the profiler."""
    half = count // 2
    began = time.perf_counter()
    for i in range(half):
        call(i)
    plain_ms = 1000 * (time.perf_counter() - began) / half
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    for i in range(half, count):
        call(i)
    profiler.disable()
    profiled_ms = 1000 * (time.perf_counter() - began) / (count - half)
    stats: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    lines = [
        f"{plain_ms:.2f} ms per call without the profiler, {profiled_ms:.2f} ms with it, of which:"
    ]
    for label, suffix, name in layers:
        cumulative = sum(
            value[3]
            for (filename, _line, function), value in stats.items()
            if function == name and filename.endswith(suffix)
        )
        ms = 1000 * cumulative / (count - half)
        lines.append(f"  {label:<48} {ms:6.2f} ms {100 * ms / profiled_ms:4.0f} %")
    return lines
