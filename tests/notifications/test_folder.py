"""Development's emails (DEBUG, no EMAIL_HOST: portal.mail.FolderBackend): each batch written
whole to a file under EMAIL_FILE_PATH, with one log line for the batch."""

from __future__ import annotations

import email
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.mail import send_mail
from django.test import override_settings

from notifications.models import Notification
from notifications.services import notifications_send
from tests.conftest import Tenant
from tests.notifications.test_emails import assigned_many, body


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    with override_settings(
        EMAIL_BACKEND="portal.mail.FolderBackend", EMAIL_FILE_PATH=str(tmp_path)
    ):
        yield tmp_path


def messages(folder: Path) -> list[email.message.Message]:
    """Every email written under the folder (Django's format: each followed by a rule)."""
    found = []
    for path in sorted(folder.iterdir()):
        for raw in path.read_bytes().split(b"\n" + b"-" * 79 + b"\n"):
            if raw.strip():
                found.append(email.message_from_bytes(raw))
    return found


def test_a_batch_of_stage_emails_is_one_file_and_one_log_line(
    tenant: Tenant, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deliveries = assigned_many(tenant, 3)
    ids = list(Notification.objects.values_list("id", flat=True))
    with caplog.at_level(logging.INFO, logger="portal.mail"):
        assert notifications_send(notification_ids=ids) == 3
    [written] = list(folder.iterdir())
    found = messages(folder)
    assert [m["To"] for m in found] == ["ada@example.com"] * 3
    assert all(sum(str(d.id) in body(m) for m in found) == 1 for d in deliveries)
    lines = [r.getMessage() for r in caplog.records if r.name == "portal.mail"]
    assert len(lines) == 1
    assert lines[0].startswith("3 emails written to ") and written.name in lines[0]
    assert "to ada@example.com, 'Your drone delivery" in lines[0] and "and 2 more" in lines[0]


def test_a_single_email_is_logged_with_its_subject(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="portal.mail"):
        send_mail("Reset your password", "The link: ...", None, ["grace@example.com"])
    [message] = messages(folder)
    assert message["Subject"] == "Reset your password"
    [line] = [r.getMessage() for r in caplog.records if r.name == "portal.mail"]
    assert line.startswith("1 email written to ")
    assert line.endswith(": to grace@example.com, 'Reset your password'")
