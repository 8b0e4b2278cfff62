"""MkDocs hook: let mkdocstrings find ``automtl.compiler`` and ``automtl.proto``.

setup.py installs the top-level folders ``compiler/`` and ``proto/`` as ``automtl.compiler`` and
``automtl.proto`` (``package_dir``). griffe, which reads the sources for mkdocstrings without
importing them, looks for a sub-package inside its parent's folder only, so it would not find
them. Before the build this hook lays out the package as it installs - a temporary
``automtl/`` whose entries are symbolic links to the repository's ``automtl/*``, ``compiler/``
and ``proto/`` - and points the Python handler's search path at it. Edits to the sources show
on the next build (``mkdocs serve`` rebuilds), since the entries are links.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from mkdocs.plugins import event_priority

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the package_dir mapping of setup.py: installed name under automtl/ -> folder in the repository
MAPPED = {"compiler": "compiler", "proto": "proto"}

_PREFIX = "automtl-docs-src-"
_mirrors = []


def _sweep_stale(folder: str) -> None:
    """Remove the mirrors of builds whose process is gone (a killed ``mkdocs serve`` never
    reaches ``on_shutdown``)."""
    for name in os.listdir(folder):
        if not name.startswith(_PREFIX):
            continue
        pid = name[len(_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
        except PermissionError:  # another user's live process
            pass


def package_mirror(root: str = ROOT) -> str:
    """A temporary folder holding ``automtl/`` as it installs (links into ``root``)."""
    _sweep_stale(tempfile.gettempdir())
    mirror = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")
    package = os.path.join(mirror, "automtl")
    os.mkdir(package)
    source = os.path.join(root, "automtl")
    for name in os.listdir(source):
        if name != "__pycache__":
            os.symlink(os.path.join(source, name), os.path.join(package, name))
    for name, folder in MAPPED.items():
        os.symlink(os.path.join(root, folder), os.path.join(package, name))
    _mirrors.append(mirror)
    return mirror


@event_priority(100)  # before mkdocstrings' on_config, which creates the handler
def on_config(config):
    plugin = config.plugins.get("mkdocstrings")
    if plugin is not None:
        on_shutdown()  # `mkdocs serve` rebuilds: the previous build's mirror is done with
        python = plugin.config.handlers.setdefault("python", {})
        python["paths"] = [package_mirror()]
    return config


def on_shutdown():
    while _mirrors:
        shutil.rmtree(_mirrors.pop(), ignore_errors=True)
