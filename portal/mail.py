"""Where emails go in development (`make run`: DEBUG with no EMAIL_HOST): into files, with a
line in the log.

Django's file-based backend writes every email of one connection (a batch of stage emails,
notifications/services.py; a password reset) into a file of its own under EMAIL_FILE_PATH
(`.local/mail/`), where a developer reads them whole, links and all. This backend adds one log
line per connection when it closes: the file, how many emails, and the recipients and subject of
the first.

Why not the console backend, which printed every email whole (about 25 lines each): under
`make run` at 150 deliveries per second, emails were 26 of the 27 lines the worker wrote per
delivery (bench/system.py), all relayed by honcho, and a worker writing faster than its
terminal reads waits on the write.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from django.core.mail.backends import filebased

logger = logging.getLogger(__name__)


class FolderBackend(filebased.EmailBackend):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._written: list[Any] = []
        self._path = ""

    def write_message(self, message: Any) -> None:
        super().write_message(message)
        self._written.append(message)
        self._path = self.stream.name  # the file open() made

    def close(self) -> None:
        try:
            super().close()
        finally:
            written, self._written = self._written, []
            if written:
                first = written[0]
                more = f" and {len(written) - 1} more" if len(written) > 1 else ""
                logger.info(
                    "%d email%s written to %s: to %s, %r%s",
                    len(written),
                    "" if len(written) == 1 else "s",
                    os.path.relpath(self._path),
                    ", ".join(first.recipients()),
                    first.subject,
                    more,
                )
