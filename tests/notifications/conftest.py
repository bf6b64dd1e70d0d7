from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import override_settings

from tests.conftest import MailSink


@pytest.fixture
def smtp(mail_server: tuple[MailSink, int], mailbox: MailSink) -> Iterator[MailSink]:
    """Django sends to the test's SMTP server."""
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=mail_server[1],
        EMAIL_USE_TLS=False,
    ):
        yield mailbox
