"""portal.api.validated: one bound serializer per thread, nothing of one input left for the next."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest
from rest_framework.exceptions import ValidationError

from deliveries.api import DeliveryIn
from portal.api import validated
from tests.conftest import delivery_body


def errors_of(data: Any) -> dict[str, Any]:
    with pytest.raises(ValidationError) as raised:
        validated(DeliveryIn, data)
    detail = raised.value.detail
    assert isinstance(detail, dict)
    return detail


def test_each_input_is_judged_on_its_own() -> None:
    assert set(errors_of({**delivery_body(), "pickup": {"lat": "north"}})) == {"pickup"}
    good = validated(DeliveryIn, delivery_body())
    assert good["package"]["size"] == "small"
    assert set(errors_of({**delivery_body(), "expedited": "maybe"})) == {"expedited"}
    again = validated(DeliveryIn, delivery_body(package={"size": "large", "weight_kg": 2.0}))
    assert again["package"]["size"] == "large"
    assert good["package"]["size"] == "small"  # what an earlier call returned is its own


def test_threads_validate_side_by_side() -> None:
    # Switch threads as often as the interpreter can, so that one thread's validation runs
    # in the middle of another's: a serializer shared between threads would mix their inputs.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    wrong: list[tuple[int, Any]] = []

    def run(number: int) -> None:
        body = delivery_body(package={"size": "medium", "weight_kg": 1.0 + number})
        for _ in range(1000):
            try:
                weight = validated(DeliveryIn, body)["package"]["weight_kg"]
            except Exception as exc:  # noqa: BLE001 - a mixed-up serializer may raise anything
                wrong.append((number, exc))
                continue
            if weight != 1.0 + number:
                wrong.append((number, weight))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)
    assert wrong == []
