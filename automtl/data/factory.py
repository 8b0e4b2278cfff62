"""Your own dataset, wherever a benchmark goes: ``data.dataset: "package.module:factory"`` in a
config (``automtl search``, ``compare``, ``group``, the baselines, resume), or ``data=`` to
:func:`automtl.experiments.compare`, :func:`~automtl.experiments.group_tasks` and
:func:`~automtl.search.search_with_baselines` in Python.

The factory returns what a built-in benchmark is (:class:`~automtl.data.Benchmark`), or a
mapping with the same fields::

    def make_dataset(size=16, seed=0):
        return {
            "train": MyData("train", size, seed), "val": MyData("val", size, seed),
            "test": MyData("test", size, seed),                 # optional
            "task_specs": [{"name": "seg", "kind": "segmentation", "classes": 3},
                           "depth:depth"],                      # as model.tasks takes them
            "input_shape": [3, size, size],                     # optional: from train[0]
            "description": "my data",                           # optional
        }

Each dataset gives ``(image, {task: target})`` samples. The factory is called with the
config's ``data.options`` as keyword arguments, plus ``seed`` (``data.data_seed``) and
``root`` (``data.root``, when set) where its signature takes them.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import torch
from torch.utils.data import Dataset

from automtl.data.benchmarks import Benchmark
from automtl.errors import ConfigError
from automtl.importing import import_object
from automtl.registry import did_you_mean

_FIELDS = ("name", "train", "val", "test", "task_specs", "input_shape", "description")

DataSource = Union[str, Callable[..., Any], Benchmark, Mapping[str, Any]]


def load_dataset(
    source: DataSource,
    *,
    root: Optional[str] = None,
    seed: int = 0,
    options: Optional[Mapping[str, Any]] = None,
) -> Benchmark:
    """A :class:`Benchmark` from ``source``: an import path ``"package.module:factory"``, the
    factory itself, or what a factory returns (a :class:`Benchmark` or a mapping of its
    fields). A factory is called with ``options`` as keyword arguments, and ``seed`` and
    ``root`` where it takes them."""
    name = source if isinstance(source, str) else getattr(source, "__name__", None)
    where = f"dataset '{source}'" if isinstance(source, str) else "the dataset"
    if isinstance(source, str):
        source = import_object(source, "dataset factory")
    if callable(source) and not isinstance(source, (Benchmark, Mapping, Dataset)):
        source = _call(source, where, root, seed, dict(options or {}))
    elif options:
        raise ConfigError(f"{where}: data.options ({', '.join(sorted(options))}) are for a dataset factory; these data are given already built")
    return as_benchmark(source, where, name)


def _call(factory: Callable[..., Any], where: str, root: Optional[str], seed: int, options: Dict[str, Any]) -> Any:
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: options only
        parameters = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if "seed" in parameters or takes_any:
        options.setdefault("seed", seed)
    if root is not None:
        if not ("root" in parameters or takes_any):
            raise ConfigError(f"{where}: data.root is set ({root}) but the factory takes no 'root' argument")
        options.setdefault("root", root)
    unknown = [k for k in options if k not in parameters and not takes_any]
    if unknown:
        raise ConfigError(
            f"{where}: the factory takes no argument {', '.join(repr(k) for k in unknown)}"
            f"{did_you_mean(unknown[0], list(parameters))}; it takes {', '.join(parameters) or 'none'}"
        )
    try:
        return factory(**options)
    except TypeError as exc:
        raise ConfigError(f"{where}: calling the factory failed: {exc}") from exc


def as_benchmark(value: Any, where: str = "the dataset", name: Optional[str] = None) -> Benchmark:
    """``value`` (a :class:`Benchmark` or a mapping of its fields) checked, as a Benchmark."""
    if isinstance(value, Benchmark):
        fields: Dict[str, Any] = {f: getattr(value, f) for f in _FIELDS}
    elif isinstance(value, Mapping):
        unknown = [str(k) for k in value if k not in _FIELDS]
        if unknown:
            raise ConfigError(
                f"{where}: unknown field '{unknown[0]}'{did_you_mean(unknown[0], _FIELDS)}; a dataset is a mapping of "
                f"{', '.join(_FIELDS)} (train, val and task_specs required) or an automtl.data.Benchmark"
            )
        fields = dict(value)
    else:
        raise ConfigError(
            f"{where}: a dataset factory returns an automtl.data.Benchmark or a mapping with train, val, test, "
            f"task_specs (and optionally input_shape, description); got {type(value).__name__}"
        )
    for split in ("train", "val", "test"):
        data = fields.get(split)
        if data is None and split != "test":
            raise ConfigError(f"{where}: no '{split}' dataset")
        if data is not None and not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            raise ConfigError(f"{where}: '{split}' is a {type(data).__name__}, not a dataset (with __getitem__ and __len__)")
        if data is not None and split != "test" and len(data) == 0:
            raise ConfigError(f"{where}: the '{split}' dataset is empty")
    specs = _task_specs(fields.get("task_specs"), where)
    shape = fields.get("input_shape")
    if shape is None:
        shape = _first_image_shape(fields["train"], where)
    if not isinstance(shape, (list, tuple)) or not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ConfigError(f"{where}: input_shape must be the shape of one input without the batch, e.g. [3, 32, 32]; got {shape!r}")
    label = fields.get("name") or name or "dataset"
    description = fields.get("description") or f"{label}: " + ", ".join(_task_name(s) for s in specs)
    return Benchmark(
        name=str(label),
        train=fields["train"],
        val=fields["val"],
        test=fields.get("test"),  # type: ignore[arg-type]
        task_specs=specs,  # type: ignore[arg-type]
        input_shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]
        description=str(description),
    )


def _task_specs(specs: Any, where: str) -> List[Any]:
    """The tasks as ``model.tasks`` takes them: spec strings (``seg:segmentation:13``) or
    mappings of :func:`automtl.tasks.make_task` arguments with a name and a kind."""
    if not isinstance(specs, (list, tuple)) or not specs:
        raise ConfigError(
            f"{where}: task_specs must be a non-empty list of tasks, e.g. [{{'name': 'seg', 'kind': 'segmentation', "
            "'classes': 3}, 'depth:depth']"
        )
    names = []
    for i, spec in enumerate(specs):
        if isinstance(spec, Mapping):
            if not isinstance(spec.get("name"), str) or not isinstance(spec.get("kind"), str):
                raise ConfigError(f"{where}: task_specs[{i}] needs a 'name' and a 'kind' (a built-in task kind), got {dict(spec)!r}")
        elif not isinstance(spec, str) or spec.count(":") < 1:
            raise ConfigError(f"{where}: task_specs[{i}] is a spec string 'name:kind[:classes]' or a mapping, got {spec!r}")
        names.append(_task_name(spec))
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{where}: task name(s) {', '.join(twice)} given twice")
    return [dict(s) if isinstance(s, Mapping) else s for s in specs]


def _task_name(spec: Any) -> str:
    return spec["name"] if isinstance(spec, Mapping) else str(spec).split(":")[0]


def _first_image_shape(data: Any, where: str) -> List[int]:
    sample = data[0]
    image = sample[0] if isinstance(sample, (tuple, list)) and sample else None
    if not isinstance(image, torch.Tensor):
        raise ConfigError(f"{where}: a sample is (image tensor, {{task: target}}); the first training sample is {type(sample).__name__}")
    return [int(s) for s in image.shape]
