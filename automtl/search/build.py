"""From a config to data and a compiled SuperModel - and back from a saved spec.

A *model spec* (JSON) holds everything needed to rebuild a run's SuperModel without pickled
code: the backbone spec (:mod:`automtl.backbones`), the input shape, the task specs of the
task library (``make_task(**spec)``), the compile options and the seed of the initial weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import torch
from torch import nn
from torch.utils.data import Dataset

from automtl.backbones import build_backbone, describe_backbone, parse_backbone
from automtl.errors import ConfigError
from automtl.search.config import SearchConfig
from automtl.supermodel import SuperModel

MODEL_FORMAT = "automtl.model"
MODEL_VERSION = 1

#: Config names of searchable operator families -> module types.
SEARCHABLE: Dict[str, Tuple[Type[nn.Module], ...]] = {
    "conv": (nn.modules.conv._ConvNd,),
    "linear": (nn.Linear,),
}


@dataclasses.dataclass
class Experiment:
    """A compiled SuperModel with its data, and the spec that rebuilds the model."""

    supermodel: SuperModel
    train: Dataset
    val: Dataset
    test: Optional[Dataset]
    spec: Dict[str, Any]
    description: str = ""


def searchable_types(names: Sequence[str]) -> Tuple[Type[nn.Module], ...]:
    types: List[Type[nn.Module]] = []
    for name in names:
        if name not in SEARCHABLE:
            raise ConfigError(f"unknown searchable operator family '{name}'; use {', '.join(SEARCHABLE)}")
        types += SEARCHABLE[name]
    return tuple(types)


def load_benchmark(config: SearchConfig) -> Any:
    """The benchmark named in ``config.data`` (see :func:`automtl.data.get_benchmark`), or
    what its dataset factory gives (``data.dataset``, :func:`automtl.data.load_dataset`)."""
    if config.data.dataset:
        from automtl.data.factory import load_dataset

        return load_dataset(config.data.dataset, root=config.data.root, seed=config.data.data_seed, options=config.data.options)
    if not config.data.benchmark:
        raise ConfigError(
            "no data to search on: set data.benchmark (e.g. --benchmark scenes) or data.dataset (a factory of "
            "your own, 'package.module:factory'), or call automtl.search(supermodel, train, val) with your own datasets"
        )
    from automtl.data import get_benchmark

    return get_benchmark(config.data.benchmark, root=config.data.root, seed=config.data.data_seed, **config.data.options)


def model_spec(config: SearchConfig, task_entries: Sequence[Any], input_shape: Sequence[int], default_backbone: Any) -> Dict[str, Any]:
    """An unresolved model spec (task entries as given); :func:`build_supermodel` resolves it."""
    backbone = config.model.backbone if config.model.backbone is not None else default_backbone
    if backbone is None:
        raise ConfigError("no backbone: set model.backbone (e.g. --backbone dilated_resnet_tiny)")
    tasks = list(config.model.tasks) or list(task_entries)
    if not tasks:
        raise ConfigError("no tasks: set model.tasks (e.g. --task seg:segmentation:13)")
    return {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "backbone": parse_backbone(backbone),
        "input_shape": [int(s) for s in input_shape],
        "tasks": tasks,
        "task_options": dict(config.model.task_options),
        "compile": {"norm": config.model.norm, "searchable": list(config.model.searchable)},
        "seed": int(config.seed),
    }


def _task_from_entry(entry: Any, in_channels: int, options: Mapping[str, Any]) -> Any:
    from automtl.tasks import TASK_KINDS, make_task, parse_task_spec

    if isinstance(entry, str):
        kind = entry.split(":")[1] if entry.count(":") >= 1 else ""
        with torch.random.fork_rng(devices=[]):  # parsed only for its spec: leave the RNG as it was
            spec = parse_task_spec(entry, in_channels=in_channels).spec
        return _task_from_entry(spec, in_channels, options)
    if isinstance(entry, Mapping):
        args = dict(entry)
        kind = args.get("kind")
        if kind is None:
            raise ConfigError(f"task {dict(entry)!r} has no 'kind' (one of the built-in task kinds)")
        for key, value in options.items():  # the config's task options win over the entry's
            if kind in TASK_KINDS and key in TASK_KINDS[kind].options:
                args[key] = value
        args.setdefault("in_channels", in_channels)
        return make_task(**args)
    raise ConfigError(f"a task is a spec string ('seg:segmentation:13') or a mapping; got {entry!r}")


def build_supermodel(spec: Mapping[str, Any], *, meta: bool = False) -> Tuple[SuperModel, Dict[str, Any]]:
    """Compile the SuperModel of ``spec``; returns it and the resolved spec (task specs
    completed by the task library). The initial weights depend only on ``spec["seed"]`` (and
    the backbone's pretrained weights, loaded before compile).

    ``meta=True`` builds the architecture only, every tensor on the meta device: no memory,
    no initialisation, no weights file read or downloaded - for a model whose weights come
    next from a saved state_dict (``load_state_dict(..., assign=True)``)."""
    import automtl

    if spec.get("format") != MODEL_FORMAT or spec.get("version") != MODEL_VERSION:
        raise ConfigError(f"not a model spec this version reads (format {spec.get('format')!r}, version {spec.get('version')!r})")
    compile_options = spec["compile"]
    types = searchable_types(compile_options["searchable"])
    device = torch.device("meta") if meta else contextlib.nullcontext()
    with torch.random.fork_rng(devices=[]), device:
        example = torch.zeros(2, *spec["input_shape"])
        torch.manual_seed(int(spec["seed"]))
        backbone = build_backbone(spec["backbone"], load_weights=not meta)
        if isinstance(backbone, nn.Module):
            from automtl.tasks import infer_in_channels

            in_channels = infer_in_channels(backbone, example)
        else:  # a prototxt model: compile once bare to read its output channels
            from automtl.tasks import infer_in_channels

            bare = automtl.compile(backbone, ["probe"], example, searchable=types, norm=compile_options["norm"])
            in_channels = infer_in_channels(bare)
        tasks = [_task_from_entry(entry, in_channels, spec.get("task_options", {})) for entry in spec["tasks"]]
        sm = automtl.compile(backbone, tasks, example, searchable=types, norm=compile_options["norm"])
    resolved = dict(spec)
    resolved["tasks"] = [dict(getattr(t, "spec", {}) or {"name": t.name}) for t in tasks]
    resolved["task_options"] = {}
    return sm, resolved


def build_experiment(config: SearchConfig, data: Any = None) -> Experiment:
    """Data and SuperModel for a config that names a benchmark or a dataset factory - or, with
    ``data``, for your own data given in Python (a :class:`~automtl.data.Benchmark`, a mapping
    of its fields, or a factory: see :func:`automtl.data.load_dataset`); the model comes from
    ``config.model``."""
    from automtl.search.presets import default_backbone

    if data is not None:
        from automtl.data.factory import load_dataset

        bench = load_dataset(data, root=config.data.root, seed=config.data.data_seed, options=config.data.options)
    else:
        bench = load_benchmark(config)
    spec = model_spec(config, bench.task_specs, bench.input_shape, default_backbone(config.data.benchmark))
    sm, resolved = build_supermodel(spec)
    description = f"{getattr(bench, 'description', config.data.benchmark)}; backbone {describe_backbone(resolved['backbone'])}"
    return Experiment(sm, bench.train, bench.val, getattr(bench, "test", None), resolved, description)
