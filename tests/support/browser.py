"""Playwright driving Debian's Chromium (Playwright's own browser downloads need the
internet; scripts/install.sh installs the `chromium` package instead)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise AssertionError("Chromium is not installed: run scripts/install.sh as root, "
                             "or apt-get install chromium")
    return path


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless Chromium (playwright.sync_api.Browser), closed on the way out."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path())
        try:
            yield browser
        finally:
            browser.close()
