"""Headless Chromium for the tests that look at an HTML page as a person would."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def chromium_screenshot(html_path: Path, png: Path, profile: Path, *, height: int = 3000) -> str:
    """Render ``html_path`` in headless Chromium (no network); returns its serialized DOM."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed (make system-deps installs it)"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
    ]
    url = html_path.resolve().as_uri()
    subprocess.run(
        [chromium, *flags, f"--window-size=1200,{height}", f"--screenshot={png}", url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", url],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return dom
