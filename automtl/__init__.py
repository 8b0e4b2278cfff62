"""automtl: compile a CNN backbone into a multi-task supermodel, search its sharing policy,
and derive and export the fixed multi-task model it finds."""

from automtl import errors
from automtl.api import compile
from automtl.export import MultiTaskModel, derive
from automtl.policy import Policy
from automtl.supermodel import SuperModel
from automtl.task import Task

__version__ = "0.1.0"

__all__ = ["compile", "Task", "Policy", "SuperModel", "MultiTaskModel", "derive", "errors", "__version__"]
