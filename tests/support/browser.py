"""A real headless Chromium for tests, driven with Selenium through Debian's chromedriver.

Missing binaries fail the test in CI (``CI`` set: .ci/run installs them) and skip it
elsewhere with the install command. The browser gets a fresh profile and no background
networking, so it never reaches beyond the loopback server under test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from support.processes import REPOSITORY
from support.prometheus import find_binary

INSTALL_HINT = "apt-get install -y chromium chromium-driver"
# The docs' pictures of the viewer, each taken by a browser test from the real viewer on the
# examples' runs. `UPDATE_DOCS_SCREENSHOTS=1 pytest tests/test_viewer_browser.py` writes them.
DOCS_IMAGES = REPOSITORY / "docs" / "images"
DOCS_SCREENSHOTS = ("viewer.png", "viewer-runs.png", "viewer-workflows.png")
UPDATE_VARIABLE = "UPDATE_DOCS_SCREENSHOTS"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
)


@contextlib.contextmanager
def headless_chromium(profile: Path) -> Iterator[object]:
    """A Selenium Chrome driver on Debian's chromium, with its own profile directory."""
    chromium = find_binary("chromium", INSTALL_HINT)
    chromedriver = find_binary("chromedriver", INSTALL_HINT)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver, name: str, directory: Path) -> Path:
    """Save the page as ``directory/name``; a docs picture is also written to docs/images
    when ``UPDATE_DOCS_SCREENSHOTS=1``."""
    path = directory / name
    driver.save_screenshot(str(path))
    if name in DOCS_SCREENSHOTS and os.environ.get(UPDATE_VARIABLE) == "1":
        shutil.copyfile(path, DOCS_IMAGES / name)
    return path
