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


class PrototxtSyntaxError(PrototxtError):
    """The text is not valid prototxt (the message carries file, line and column)."""


class UnknownFieldError(PrototxtError):
    """A field that the schema (Caffe's fields plus automtl's extensions) does not have."""


class UnsupportedLayerError(PrototxtError):
    """Layer types automtl cannot map to torch ops; ``layers`` lists every one as (name, type)."""

    def __init__(self, message: str, layers=()):
        super().__init__(message)
        self.layers = list(layers)


class MissingBottomError(PrototxtError):
    """A layer reads a blob that no earlier layer (or input) produces."""


class ShapeMismatchError(PrototxtError):
    """A layer's inputs do not have the shapes it needs (e.g. Eltwise of different shapes)."""


class MissingInputShapeError(PrototxtError):
    """The net does not say the shape of its input, and none was given."""


class InvalidLayerError(PrototxtError):
    """A supported layer type with settings that Caffe would reject or automtl cannot map."""


class PolicyError(AutoMTLError):
    """A sharing policy does not fit the SuperModel it is used with."""


class ConfigError(AutoMTLError):
    """A configuration value or key is invalid."""


class DataError(AutoMTLError):
    """A dataset is missing, malformed, or does not provide what the tasks need."""


class CheckpointError(AutoMTLError):
    """A checkpoint or saved model could not be loaded safely."""


class TrainingError(AutoMTLError):
    """Training cannot go on (e.g. a loss became NaN or infinite); the last checkpoint is kept."""


class RunInterrupted(AutoMTLError):
    """A run was stopped by a signal (SIGTERM, SIGINT) after writing a checkpoint it resumes
    from. ``signal`` is the signal's number; a command line exits with ``128 + signal``."""

    def __init__(self, message: str, signal: int):
        super().__init__(message)
        self.signal = int(signal)


class ExportError(AutoMTLError):
    """A derived model could not be exported."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message without a closing period, for quoting it
    inside ours (torch.fx and torch.export append whole graphs and tooling hints below it)."""
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__
