"""Where prototxt text comes from: a file, the text itself, or a backbone shipped with automtl.

``resolve_source(source)`` decides, in this order:

1. an existing file -> its text;
2. a bare name (no path separator, no braces, colons or white space) -> the shipped backbone
   of that name (``deeplab_resnet34``, ``resnet18``, ...; a ``.prototxt`` suffix is allowed);
3. a string with braces, colons or line breaks -> prototxt text;
4. anything else (a path that does not exist) -> an error naming it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from importlib import resources
from typing import Dict, Optional, Union

from automtl.errors import PrototxtError

_SUFFIX = ".prototxt"
_TEXT_MARKERS = re.compile(r"[{}:<>\n]")


@dataclasses.dataclass(frozen=True)
class PrototxtSource:
    text: str
    #: how error messages name it: the path as given, or "<prototxt text>"
    label: str
    #: the file it was read from, if any
    path: Optional[str] = None


def shipped_backbones() -> Dict[str, str]:
    """Names of the backbones shipped in ``automtl.proto`` -> their file paths."""
    folder = resources.files("automtl.proto")
    found: Dict[str, str] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(_SUFFIX) and entry.is_file():
            found[entry.name[: -len(_SUFFIX)]] = str(entry)
    return dict(sorted(found.items()))


def _read(path: str, label: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PrototxtError(f"{label}: cannot read the file ({exc.strerror})") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PrototxtError(
            f"{label}: not a text file (byte {exc.start} is not UTF-8). A binary .caffemodel holds "
            "weights, not the network description: pass the .prototxt file"
        ) from exc


def _is_bare_name(text: str) -> bool:
    return bool(text) and not _TEXT_MARKERS.search(text) and not any(c.isspace() for c in text) and (
        os.sep not in text and "/" not in text and (os.altsep is None or os.altsep not in text)
    )


def resolve_source(source: Union[str, "os.PathLike[str]"]) -> PrototxtSource:
    """The prototxt text of ``source`` (a path, prototxt text, or a shipped backbone name)."""
    if isinstance(source, os.PathLike):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise PrototxtError(f"{path}: no such prototxt file")
        return PrototxtSource(_read(path, path), path, path)
    if not isinstance(source, str):
        raise PrototxtError(f"a prototxt source must be a path or text, got {type(source).__name__}")
    if _is_bare_name(source) or source.endswith(_SUFFIX) and "\n" not in source:
        if os.path.isfile(source):
            return PrototxtSource(_read(source, source), source, source)
        if _is_bare_name(source):
            name = source[: -len(_SUFFIX)] if source.endswith(_SUFFIX) else source
            shipped = shipped_backbones()
            if name in shipped:
                path = shipped[name]
                return PrototxtSource(_read(path, f"{name}{_SUFFIX}"), f"{name}{_SUFFIX}", path)
            close = difflib.get_close_matches(name, list(shipped), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise PrototxtError(
                f"'{source}' is neither a prototxt file nor a shipped backbone{hint}. Shipped backbones: "
                f"{', '.join(shipped)}; or pass a path to a .prototxt file, or its text"
            )
        raise PrototxtError(f"{source}: no such prototxt file")
    if _TEXT_MARKERS.search(source):
        return PrototxtSource(source, "<prototxt text>")
    raise PrototxtError(f"{source}: no such prototxt file")
