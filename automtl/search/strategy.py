"""Backwards-compatible names: the sharing methods moved to :mod:`automtl.methods`
(the interface and registry in :mod:`automtl.methods.base`, one module per method)."""

from typing import Dict

from automtl.methods.automtl_method import AutoMTL
from automtl.methods.base import METHODS, Score, SharingMethod, make_method
from automtl.methods.fixed import FixedPolicy

#: alias -> method name (``single``, ``multi``, ``maximum_roaming``).
ALIASES: Dict[str, str] = METHODS.aliases

__all__ = ["SharingMethod", "Score", "AutoMTL", "FixedPolicy", "METHODS", "ALIASES", "make_method"]
