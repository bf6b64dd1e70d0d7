"""Celery tasks: thin, each translating a message into service calls."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="workers.ping")
def ping() -> str:
    """Round trip through the broker and a worker, used by tests and operators."""
    return "pong"
