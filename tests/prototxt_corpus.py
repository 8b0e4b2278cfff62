"""Where the real prototxt files are: ``tests/corpus`` (in the repository, see its SOURCES),
plus ``../shared/corpus/prototxt`` beside the checkout and ``$AUTOMTL_CORPUS`` when they exist
(``os.pathsep``-separated folders), which may add files the repository cannot carry.

Used by tests/test_corpus.py, the schema test, the fuzz tests and fuzz/run.py (which puts
this folder on ``sys.path``), so every reader sees the same corpus.
"""

from __future__ import annotations

import os
from typing import Dict, List

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
#: the files this repository carries (licences in SOURCES)
BUNDLED = os.path.join(TESTS, "corpus")
#: the larger shared corpus some checkouts have beside them
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "corpus")


def corpus_dirs() -> List[str]:
    """The folders that exist, the repository's first."""
    extra = [d for d in os.environ.get("AUTOMTL_CORPUS", "").split(os.pathsep) if d]
    dirs = [BUNDLED, os.path.join(SHARED, "prototxt"), *extra]
    seen: List[str] = []
    for d in dirs:
        real = os.path.realpath(d)
        if os.path.isdir(d) and real not in (os.path.realpath(s) for s in seen):
            seen.append(d)
    return seen


def corpus_files() -> Dict[str, str]:
    """``{file name: path}`` of every ``.prototxt`` file; a name found in several folders is
    read from the first (the repository's copy is the same file, byte for byte)."""
    found: Dict[str, str] = {}
    for d in corpus_dirs():
        for name in sorted(os.listdir(d)):
            if name.endswith(".prototxt") and name not in found:
                found[name] = os.path.join(d, name)
    return dict(sorted(found.items()))


def caffe_proto() -> str:
    """Caffe's own schema (for field names and numbers): ``$AUTOMTL_CAFFE_PROTO``, else the
    repository's copy."""
    return os.environ.get("AUTOMTL_CAFFE_PROTO", os.path.join(BUNDLED, "caffe.proto"))
