"""Run directories for the viz tests, written by real (tiny) searches, so that a change of
the run-directory format breaks these tests rather than the users' reports."""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
from html.parser import HTMLParser
from typing import Dict, List, Tuple

import automtl
from search_toy import TINY, toy_data, toy_supermodel

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def toy_search(out: str, callbacks=(), overrides=()) -> automtl.SuperModel:
    """The two-task toy search of the search tests (a SuperModel built in Python, so the run
    directory has no model spec), logging evaluations in every stage."""
    sm = toy_supermodel(0)
    train, val, test = toy_data()
    automtl.search(sm, train, val, test, config=TINY, out=out, callbacks=list(callbacks), progress=False, overrides=list(overrides))
    return sm


def png_size(path: str) -> Tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


class PageParser(HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: List[Tuple[str, Dict[str, str]]] = []
        self.text: List[str] = []

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data):  # type: ignore[no-untyped-def]
        self.text.append(data)


def parse_page(path: str) -> PageParser:
    parser = PageParser()
    with open(path, encoding="utf-8") as f:
        parser.feed(f.read())
    parser.close()
    return parser


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--enable-logging=stderr", "--v=0",
]


def chromium(page: str, *extra: str) -> subprocess.CompletedProcess:
    """Headless Chromium (Debian's ``chromium``, installed by .ci/run) on a local page."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, "file://" + os.path.abspath(page)],
            capture_output=True, text=True, timeout=120,
        )


def console_messages(stderr: str) -> List[str]:
    """The page's console lines in Chromium's log (``CONSOLE(12)]`` or ``CONSOLE:12]`` forms)
    and uncaught exceptions."""
    return [line for line in stderr.splitlines() if "CONSOLE(" in line or ":CONSOLE:" in line or "Uncaught" in line]
