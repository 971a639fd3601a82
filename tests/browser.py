"""A real browser for the tests: Debian's Chromium (``/usr/bin/chromium``, installed by the Makefile)
driven by playwright's Python API, with no network but localhost: every request to another host is
refused and remembered, so a test can assert that a page loaded nothing from outside."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = os.environ.get("CRM_CHROMIUM", "/usr/bin/chromium")
# as DESIGN.md says: no background traffic (the machine's closed network refuses it noisily)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
LOCAL = {"127.0.0.1", "localhost"}


class Browser:
    def __init__(self, browser):
        self.browser = browser
        self.outside: list[str] = []  # requests for another host than this machine, refused

    def context(self, **options):
        context = self.browser.new_context(accept_downloads=True, **options)

        def route(r):
            if urlsplit(r.request.url).hostname in LOCAL or r.request.url.startswith(("data:", "blob:")):
                return r.continue_()
            self.outside.append(r.request.url)
            return r.abort()

        context.route("**/*", route)
        return context


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield Browser(browser)
        finally:
            browser.close()


def axe_violations(page) -> list[str]:
    """axe-core's accessibility violations on the page (its script is packaged: nothing is fetched)."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [f"{v['id']}: {v['help']} ({len(v['nodes'])} nodes, e.g. {v['nodes'][0]['html'][:120]})"
            for v in results.response["violations"]]  # fmt: skip


def screenshot(page, name: str) -> None:
    """Where ``CRM_CONSOLE_SCREENSHOTS`` names a folder (the README's pictures: docs/console)."""
    folder = os.environ.get("CRM_CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)
