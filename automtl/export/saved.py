"""A derived model as one file, and loading a derived model from a file or a run directory.

``save_model(model, path, spec)`` writes one ``torch.save`` file that ``torch.load(...,
weights_only=True)`` reads: the *model spec* that rebuilds the SuperModel (the search
pipeline's format, :func:`automtl.search.build.build_supermodel`: backbone spec, input shape,
task specs, compile options, seed), the policy, and the derived model's state_dict. Loading
compiles the spec again on the meta device (the architecture only: no memory, no random
initialisation, no pretrained weights read or downloaded), derives the policy and assigns the
saved weights strictly (``load_state_dict(assign=True)``) - the full SuperModel is never
materialised, and nothing in the file is executed as code.

:func:`load_derived` accepts either such a file or a search run directory (whose final model
:func:`automtl.load_run` rebuilds), which is what ``automtl export`` and ``automtl info`` take.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch

from automtl.errors import CheckpointError, ConfigError, ExportError, PolicyError
from automtl.export.derive import MultiTaskModel
from automtl.io import atomic_torch_save, load_location, safe_torch_load

FORMAT = "automtl.derived_model"
VERSION = 1
PathLike = Union[str, os.PathLike]
#: where loaded weights go, as ``torch.load``'s ``map_location`` takes it (None: the CPU)
MapLocation = Union[None, str, torch.device, Dict[str, str], Callable[..., Any]]


def save_model(model: MultiTaskModel, path: PathLike, spec: Mapping[str, Any]) -> str:
    """Write ``model`` (derived from the SuperModel that ``spec`` rebuilds) to ``path``.

    ``spec`` is a model spec as the search pipeline writes it (``format: automtl.model``); the
    model must carry the policy it was derived with. Returns the path written."""
    if not isinstance(model, MultiTaskModel):
        raise ExportError(f"save_model needs a derived model (sm.derive(policy)), got {type(model).__name__}")
    if model.policy is None:
        raise ExportError("save_model: the model has no policy; derive it with sm.derive(policy)")
    _check_spec(spec, "save_model")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "spec": _plain(dict(spec), "spec"),
        "policy": model.policy.to_dict(),
        "tasks": list(model.task_names),
        "block_skips": list(getattr(model, "block_skips", ())),  # AdaShare's whole-block skips
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    atomic_torch_save(payload, path)
    return os.fspath(path)


def load_model(path: PathLike, map_location: MapLocation = None, trust_code: bool = False) -> MultiTaskModel:
    """The derived model saved by :func:`save_model`, in eval mode. ``map_location`` (as
    ``torch.load`` takes it, e.g. ``"cuda"``; default: the CPU) is where its weights are
    loaded, and so where the model is. A model whose backbone comes from a factory of your
    own (``module:<package.module>:<factory>``) imports and calls it only with
    ``trust_code=True``."""
    model, _ = _load_file(os.fspath(path), map_location, trust_code)
    return model


@dataclasses.dataclass
class LoadedModel:
    """A derived model and what it was loaded from."""

    model: MultiTaskModel
    input_shape: Optional[Tuple[int, ...]]  # (channels, height, width) it was built for
    source: str
    spec: Optional[Dict[str, Any]]


def load_derived(path: PathLike, map_location: MapLocation = None, trust_code: bool = False) -> LoadedModel:
    """A derived model from a file written by :func:`save_model` or from a search run
    directory (its final model, rebuilt by :func:`automtl.load_run`), its weights loaded to
    ``map_location`` (default: the CPU); ``trust_code`` as :func:`load_model` takes it."""
    path = os.fspath(path)
    if os.path.isdir(path):
        from automtl.search import load_run

        if not os.path.exists(os.path.join(path, "model", "model.json")):
            raise CheckpointError(
                f"{path} is a directory without model/model.json: not a finished search run "
                "(run `automtl search ... --out DIR` to the end, or pass a file written by automtl.save_model)"
            )
        model, meta = load_run(path, map_location=map_location, trust_code=trust_code)
        spec = meta.get("spec") if isinstance(meta, Mapping) else None
        return LoadedModel(model, _input_shape(spec), f"run {path}", dict(spec) if spec else None)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file or run directory")
    model, spec = _load_file(path, map_location, trust_code)
    return LoadedModel(model, _input_shape(spec), f"file {path}", spec)


def _load_file(path: str, map_location: MapLocation = None, trust_code: bool = False) -> Tuple[MultiTaskModel, Dict[str, Any]]:
    payload = safe_torch_load(path, map_location=load_location(map_location))
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, Mapping) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not a derived model saved by automtl.save_model (format {found!r}); "
            "pass a file written by automtl.save_model or a search run directory"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: derived-model file version {payload.get('version')!r}; this automtl reads version {VERSION}")
    for key in ("spec", "policy", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"{path}: the derived-model file has no '{key}'")
    spec = dict(payload["spec"])
    try:
        _check_spec(spec, path)
        from automtl.policy import Policy
        from automtl.search.build import build_supermodel

        from automtl.importing import refusing_code

        with refusing_code(None if trust_code else path):
            supermodel, _ = build_supermodel(spec, meta=True)  # the architecture only: the weights are the file's
        if payload.get("block_skips"):  # the model skips whole residual blocks (AdaShare): derive it so again
            from automtl.methods.blocks import restore_block_skips

            missing = restore_block_skips(supermodel, payload["block_skips"])
            if missing:
                raise PolicyError(f"it names residual blocks the rebuilt model does not have: {', '.join(missing[:5])}")
        policy = Policy.from_dict(supermodel, payload["policy"])
    except (ConfigError, ExportError, PolicyError) as exc:
        raise CheckpointError(f"cannot rebuild the model saved in {path}: {exc}") from exc
    model = supermodel.derive(policy)
    assign_state(model, payload["state_dict"], f"{path}: the saved weights do not fit")
    return model.eval(), spec


def assign_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], mismatch: str) -> None:
    """Load ``state`` into ``model`` strictly, its tensors taken as they are (``assign=True``:
    a model built on the meta device gets them without a copy). Every parameter and buffer
    must come from ``state``; ``mismatch`` begins the error otherwise ("x.pt does not fit")."""
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{mismatch} the rebuilt model: {str(exc).strip().splitlines()[0]}") from exc
    empty = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if empty:
        raise CheckpointError(f"{mismatch} the rebuilt model: it leaves {', '.join(empty[:5])} without values")


def _check_spec(spec: Any, where: str) -> None:
    from automtl.search.build import MODEL_FORMAT

    if not isinstance(spec, Mapping) or spec.get("format") != MODEL_FORMAT:
        raise ExportError(
            f"{where}: spec must be a model spec (format {MODEL_FORMAT!r}: backbone, input_shape, tasks, "
            "compile, seed) as automtl.search.build.model_spec makes it, so the model can be rebuilt"
        )


def _plain(value: Any, where: str) -> Any:
    """Only what ``weights_only`` loading accepts: JSON-like values."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise ExportError(f"save_model: {where} holds a {type(value).__name__}; a spec holds JSON values only")


def _input_shape(spec: Optional[Mapping[str, Any]]) -> Optional[Tuple[int, ...]]:
    shape = spec.get("input_shape") if isinstance(spec, Mapping) else None
    if isinstance(shape, (list, tuple)) and shape and all(isinstance(s, int) for s in shape):
        return tuple(int(s) for s in shape)
    return None


def example_input(shape: Tuple[int, ...], batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A reproducible random input of ``(batch, *shape)`` for export checks."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *shape), generator=generator)
