"""The browser tests drive Debian's chromium (Playwright's `executable_path`, never a downloaded
browser). Without one, a run that collects them stops at once and says what to install, rather
than skipping them quietly: a machine that cannot run them must not look green.

Registered as a pytest plugin in tests/conftest.py. The browser tests take the executable from
`chromium_path()`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

DEBIAN_CHROMIUM = "/usr/bin/chromium"
MISSING = (
    "The browser tests need Debian's chromium: sudo apt-get install chromium "
    "(or set CHROMIUM=/path/to/chromium)"
)


def _executable(path: str) -> bool:
    return Path(path).is_file() and os.access(path, os.X_OK)


def find_chromium() -> str | None:
    """$CHROMIUM when set (and nothing else then), else /usr/bin/chromium, else `chromium` or
    `chromium-browser` on PATH."""
    given = os.environ.get("CHROMIUM")
    if given:
        found = shutil.which(given)
        return found if found and _executable(found) else None
    if _executable(DEBIAN_CHROMIUM):
        return DEBIAN_CHROMIUM
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_path() -> str:
    """The chromium the browser tests launch."""
    path = find_chromium()
    if path is None:
        raise FileNotFoundError(_missing())
    return path


def _missing() -> str:
    given = os.environ.get("CHROMIUM")
    return f"{MISSING}; CHROMIUM={given} is not an executable" if given else MISSING


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    wants_browser = any(item.get_closest_marker("browser") for item in session.items)
    if wants_browser and find_chromium() is None:
        pytest.exit(_missing(), returncode=pytest.ExitCode.USAGE_ERROR)
