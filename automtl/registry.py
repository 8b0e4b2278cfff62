"""One small registry type for every plug-in table: sharing methods, loss weightings,
built-in backbones, task kinds and benchmarks.

    METHODS = Registry("sharing method")

    @METHODS.register("automtl")
    def _automtl(config): ...

    METHODS.register("single_task", factory, aliases=("single",))
    METHODS.get("single")          # the factory registered as single_task
    METHODS.names()                # ['automtl', 'single_task']

A registry sits below the plug-ins it lists (they register into it), so it imports nothing
but :mod:`automtl.errors`. A lookup of an unknown name raises a :class:`ConfigError` that
names the closest known name ("did you mean") and lists every name.
"""

from __future__ import annotations

import difflib
from typing import Callable, Dict, Generic, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union, overload

from automtl.errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: object, choices: Iterable[str], cutoff: float = 0.6, n: int = 1) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to ``name`` (`` 'x' or 'y'`` for up to
    ``n`` of them, closest first), or ``""`` if none is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=n, cutoff=cutoff)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


class Registry(Generic[T]):
    """Named entries in registration order, with aliases.

    ``kind`` names what the registry holds in error messages ("unknown <kind> 'x'");
    ``listing`` introduces the list of names there ("available", "the benchmarks are")."""

    def __init__(self, kind: str, listing: str = "available"):
        self.kind = kind
        self.listing = listing
        self._entries: Dict[str, T] = {}
        self._aliases: Dict[str, str] = {}

    # -- registering --------------------------------------------------------------------------
    @overload
    def register(self, name: str, obj: T, aliases: Iterable[str] = ...) -> T: ...

    @overload
    def register(self, name: str, obj: None = ..., aliases: Iterable[str] = ...) -> Callable[[T], T]: ...

    def register(self, name: str, obj: Optional[T] = None, aliases: Iterable[str] = ()) -> Union[T, Callable[[T], T]]:
        """Register ``obj`` under ``name`` (and ``aliases``); without ``obj``, a decorator."""
        if obj is None:

            def decorator(target: T) -> T:
                self.register(name, target, aliases)
                return target

            return decorator
        for key in (name, *aliases):
            if not isinstance(key, str) or not key:
                raise ConfigError(f"{self.kind} registry: a name is a non-empty string, got {key!r}")
            if key in self._entries or key in self._aliases:
                raise ConfigError(f"{self.kind} registry: '{key}' is registered already; pick another name")
        self._entries[name] = obj
        for alias in aliases:
            self._aliases[alias] = name
        return obj

    # -- looking up ---------------------------------------------------------------------------
    def canonical(self, name: str, where: str = "", what: Optional[str] = None) -> str:
        """The registered name ``name`` stands for (itself, or the name an alias points to)."""
        if isinstance(name, str):
            if name in self._entries:
                return name
            if name in self._aliases:
                return self._aliases[name]
        raise self.unknown(name, where, what)

    def get(self, name: str, where: str = "", what: Optional[str] = None) -> T:
        """The entry registered under ``name`` or one of its aliases. An unknown name raises a
        :class:`ConfigError`; ``where`` prefixes its message (``"task spec 'x'"``), ``what``
        replaces the registry's ``kind`` in it."""
        return self._entries[self.canonical(name, where, what)]

    def unknown(
        self, name: object, where: str = "", what: Optional[str] = None, listing: Optional[str] = None, shown: Optional[Sequence[str]] = None
    ) -> ConfigError:
        """The error for an unknown ``name``: the closest known name (aliases included), and
        the names (``shown``, or every registered name) after ``listing``."""
        hint = did_you_mean(name, list(self._entries) + list(self._aliases))
        prefix = f"{where}: " if where else ""
        names = ", ".join(self._entries if shown is None else shown)
        return ConfigError(f"{prefix}unknown {what or self.kind} '{name}'{hint}; {listing or self.listing}: {names}")

    def names(self) -> List[str]:
        """The registered names (not the aliases), in registration order."""
        return list(self._entries)

    @property
    def aliases(self) -> Dict[str, str]:
        """alias -> registered name."""
        return dict(self._aliases)

    def items(self) -> List[Tuple[str, T]]:
        return list(self._entries.items())

    def values(self) -> List[T]:
        return list(self._entries.values())

    def keys(self) -> List[str]:
        return self.names()

    # -- dict-like reading (existing callers index, iterate and test membership) ------------
    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
