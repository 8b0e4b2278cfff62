"""User code named by an import path, ``"package.module:attribute"``: a backbone factory
(``module:<path>`` backbones) or a dataset factory (``data.dataset``).

Only an attribute of an importable module is looked up - nothing is evaluated from the text.
A config names code the way a script does, so its import paths are followed; a file that
automtl *loads* (a saved model, a run's model description) is data, and within
:func:`refusing_code` an import path it names is refused unless the caller trusts it.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import re
from typing import Any, Iterator, Optional

from automtl.errors import CheckpointError, ConfigError
from automtl.registry import did_you_mean

_REFUSED: "contextvars.ContextVar[Optional[str]]" = contextvars.ContextVar("automtl_refused_code", default=None)


@contextlib.contextmanager
def refusing_code(source: Optional[str]) -> Iterator[None]:
    """Within: :func:`import_object` refuses every import path, as named by ``source`` (a file
    being loaded); ``source=None`` allows them (the caller trusts the file)."""
    token = _REFUSED.set(source)
    try:
        yield
    finally:
        _REFUSED.reset(token)

_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def check_import_path(path: Any, what: str) -> str:
    """``path`` if it reads ``package.module:attribute``, else a :class:`ConfigError`."""
    if not isinstance(path, str) or not _PATH.match(path.strip()):
        raise ConfigError(
            f"{what} {path!r} is not an import path: write 'package.module:name' (e.g. 'my_project.data:make_dataset'), "
            "the module importable from where automtl runs"
        )
    return path.strip()


def import_object(path: str, what: str) -> Any:
    """The object ``attribute`` of module ``package.module`` named by ``path``."""
    path = check_import_path(path, what)
    refused = _REFUSED.get()
    if refused is not None:
        raise CheckpointError(
            f"{refused} names code to import and run ({what} '{path}'); automtl does not run code a loaded file "
            "names. If you trust where it came from, load it with trust_code=True (automtl export / info: --trust-code)"
        )
    module_name, attribute = path.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):  # the module itself, not one it imports
            raise ConfigError(
                f"{what} '{path}': no module named '{module_name}'; it must be importable from where automtl runs "
                "(install it, or add its folder to PYTHONPATH)"
            ) from exc
        raise ConfigError(f"{what} '{path}': importing {module_name} failed: {exc}") from exc
    except Exception as exc:  # the user's module raised while being imported
        raise ConfigError(f"{what} '{path}': importing {module_name} failed: {type(exc).__name__}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = [name for name in dir(target) if not name.startswith("_")]
            raise ConfigError(f"{what} '{path}': {module_name} has no '{attribute}'{did_you_mean(part, public)}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{what} '{path}' is a {type(target).__name__}, not a function or class to call")
    return target
