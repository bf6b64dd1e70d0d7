"""portal.yielding: bulk work in a thread of its own at a higher niceness, on its own database
connection, with the caller's context; inline inside a transaction or when switched off."""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections, transaction

from businesses.models import Business
from portal.yielding import run_yielding

REQUEST = contextvars.ContextVar("request", default="none")


@pytest.fixture(autouse=True)
def closed_after(settings: Any) -> Iterator[None]:
    """The yielding thread's database connection closed after each test (the test database
    cannot be dropped while a connection is open)."""
    yield
    settings.WORKER_YIELDING_NICE = 10
    run_yielding(connections.close_all)


def where() -> tuple[int, int, str]:
    """The thread this runs in, its niceness, and the caller's context as seen from it."""
    tid = threading.get_native_id()
    return tid, os.getpriority(os.PRIO_PROCESS, tid), REQUEST.get()


def test_the_work_runs_at_the_nice_set_in_a_thread_of_its_own_with_the_callers_context(
    settings: Any,
) -> None:
    settings.WORKER_YIELDING_NICE = 10
    REQUEST.set("delivery 42")
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    tid, nice, seen = run_yielding(where)
    assert tid != threading.get_native_id()
    assert nice == max(10, mine)
    assert seen == "delivery 42"
    # The same thread next time; this thread's own niceness is untouched.
    assert run_yielding(where)[0] == tid
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine


def test_threads_the_work_starts_yield_too(settings: Any) -> None:
    settings.WORKER_YIELDING_NICE = 10
    found: list[int] = []

    def starts_one() -> None:
        inner = threading.Thread(
            target=lambda: found.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        )
        inner.start()
        inner.join()

    run_yielding(starts_one)
    assert found and found[0] >= 10


def test_its_exception_reaches_the_caller(settings: Any) -> None:
    settings.WORKER_YIELDING_NICE = 10

    def fails() -> None:
        raise LookupError("no such message")

    with pytest.raises(LookupError, match="no such message"):
        run_yielding(fails)


def test_switched_off_it_runs_inline(settings: Any) -> None:
    settings.WORKER_YIELDING_NICE = 0
    assert run_yielding(where)[0] == threading.get_native_id()


@pytest.mark.django_db(transaction=True)
def test_it_reads_what_is_committed_on_a_connection_of_its_own(settings: Any) -> None:
    settings.WORKER_YIELDING_NICE = 10
    Business.objects.create(name="Committed", email="c@example.com")
    assert run_yielding(lambda: list(Business.objects.values_list("name", flat=True))) == [
        "Committed"
    ]
    # Inside a transaction it runs inline, where it sees what is not yet committed.
    with transaction.atomic():
        Business.objects.create(name="Uncommitted", email="u@example.com")
        tid, _, _ = run_yielding(where)
        names = run_yielding(lambda: set(Business.objects.values_list("name", flat=True)))
    assert tid == threading.get_native_id()
    assert names == {"Committed", "Uncommitted"}
