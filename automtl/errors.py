"""Exceptions raised by automtl.

Every error a user can cause is an :class:`AutoMTLError` whose message says what was wrong,
where (file/line/column, layer, node or module) and what to do about it.
"""

from __future__ import annotations


class AutoMTLError(Exception):
    """Base class of every error automtl raises on bad input or a failed run."""


class CompileError(AutoMTLError):
    """A backbone could not be compiled into a SuperModel."""


class TraceError(CompileError):
    """torch.fx could not trace a module of the backbone."""


class PrototxtError(CompileError):
    """A prototxt model file was rejected. Subclasses say why."""


class PolicyError(AutoMTLError):
    """A sharing policy does not fit the SuperModel it is used with."""


class ConfigError(AutoMTLError):
    """A configuration value or key is invalid."""


class DataError(AutoMTLError):
    """A dataset is missing, malformed, or does not provide what the tasks need."""


class CheckpointError(AutoMTLError):
    """A checkpoint or saved model could not be loaded safely."""


class ExportError(AutoMTLError):
    """A derived model could not be exported."""
