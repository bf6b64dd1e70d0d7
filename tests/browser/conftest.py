"""Browser tests: Debian's headless chromium, driven by Playwright, against the whole system.

The site is pytest-django's `live_server` (a real HTTP server thread on the test database); the
tracking pages' live feed is the Procfile's `live` process (uvicorn) on a port of its own, which
the pages are told through LIVE_BASE_URL, as `make run` tells them. Map tiles are refused at the
browser, as on a machine without the internet: the pages must work without them.

Every page a test opens is watched: a Content Security Policy violation, an uncaught script
error or any other console error (the refused tiles and a form's own 422 aside) fails the test.
`Site.shoot` saves a page at desktop and phone widths into .local/screenshots/ for people to
look at.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client, override_settings
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from tests.browser_check import chromium_path
from tests.conftest import database_url
from tests.support import BASE_DIR, LiveProcess, live_process_running

SCREENSHOTS = BASE_DIR / ".local" / "screenshots"
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
# The machine's network is closed: without these chromium keeps trying its own services.
BROWSER_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
TILE_HOST = "tile.openstreetmap.org"
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright's sync API keeps an event loop running on this thread; Django would take the
    # test's own ORM calls for calls from async code without this (the server threads are
    # unaffected). Per module, so that neither outlives the browser tests into other tests.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=BROWSER_ARGS)
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture(scope="session")
def live_feed(
    live_server: Any, django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveProcess]:
    """The Procfile's `live` process on the test database, allowing the live server's pages."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "PYTHONUNBUFFERED": "1",
        "LIVE_ALLOW_ORIGIN": live_server.url,
    }
    with live_process_running(env, tmp_path_factory.mktemp("live") / "uvicorn.log") as server:
        yield server


@dataclass
class Site:
    """The site under test, and the people visiting it, each in a browser context of their own."""

    url: str
    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def visitor(self) -> Page:
        """A page in a fresh browser: no cookies, nobody signed in."""
        context = self.browser.new_context(viewport=DESKTOP, base_url=self.url)  # type: ignore[arg-type]
        context.set_default_timeout(TIMEOUT_MS)
        # No internet here (and none wanted in CI): the map's tiles fail at once.
        context.route(f"https://{TILE_HOST}/**", lambda route: route.abort())
        self.contexts.append(context)
        return self._watched(context.new_page())

    def _watched(self, page: Page) -> Page:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        return page

    def signed_in(self, user: User) -> Page:
        """A page in a fresh browser with `user` signed in (their session cookie)."""
        client = Client()
        client.force_login(user)
        page = self.visitor()
        cookie = client.cookies[settings.SESSION_COOKIE_NAME]
        page.context.add_cookies(
            [{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": self.url}]
        )
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        where = message.location.get("url", "") if message.location else ""
        page = message.page.url if message.page else ""
        if TILE_HOST in where or TILE_HOST in message.text:
            return  # the refused tiles: by design
        if where == page and message.text.startswith("Failed to load resource: the server"):
            return  # the page's own status (a form with errors is a 422): the tests check it
        self.problems.append(f"console error on {page}: {message.text} ({where})")

    def assert_clean(self) -> None:
        """No CSP violation and no script error so far, on any page."""
        problems, self.problems[:] = list(self.problems), []
        assert not problems, "\n".join(problems)

    def shoot(self, page: Page, name: str, *, again: bool = True) -> None:
        """The page, whole, at desktop and at phone width, into .local/screenshots/.

        At phone width the page is opened again in a phone-sized tab of the same browser (as a
        phone would lay it out, maps fitted to it); `again=False` for the answer to a form,
        which is only resized."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"{name}-desktop.png", full_page=True)
        if not again:
            page.set_viewport_size(PHONE)  # type: ignore[arg-type]
            page.wait_for_timeout(200)  # reflow; Leaflet follows the resize
            page.screenshot(path=SCREENSHOTS / f"{name}-phone.png", full_page=True)
            page.set_viewport_size(DESKTOP)  # type: ignore[arg-type]
            return
        phone = self._watched(page.context.new_page())
        try:
            phone.set_viewport_size(PHONE)  # type: ignore[arg-type]
            phone.goto(page.url)
            phone.wait_for_timeout(200)  # the maps' first drawing
            phone.screenshot(path=SCREENSHOTS / f"{name}-phone.png", full_page=True)
        finally:
            phone.close()


@pytest.fixture
def site(
    live_server: Any, live_feed: LiveProcess, transactional_db: None, browser: Browser
) -> Iterator[Site]:
    """The live server with its pages pointed at the live process; closed and checked after."""
    live_base = f"http://127.0.0.1:{live_feed.port}"
    # What settings build from LIVE_BASE_URL in the environment: the pages may connect to the
    # feed's origin.
    policy = copy.deepcopy(settings.CONTENT_SECURITY_POLICY)
    policy["DIRECTIVES"]["connect-src"] = [*policy["DIRECTIVES"]["connect-src"], live_base]
    with override_settings(
        LIVE_BASE_URL=live_base, CONTENT_SECURITY_POLICY=policy, PUBLIC_BASE_URL=live_server.url
    ):
        visit = Site(live_server.url, browser)
        try:
            yield visit
        finally:
            for context in visit.contexts:
                context.close()
    visit.assert_clean()
