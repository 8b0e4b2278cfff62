import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "fuzz"))  # netgen, properties: shared with the atheris targets


@pytest.fixture
def cheap_limits(monkeypatch):
    """The fuzz targets' net-size limit: big seed nets are refused part way instead of built,
    so every example stays fast (the limit check is the same code)."""
    from automtl.compiler.prototxt import limits

    monkeypatch.setattr(limits, "MAX_NET_PARAMETERS", 2**24)
