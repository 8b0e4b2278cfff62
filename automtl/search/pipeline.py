"""``automtl.search``: run a sharing method's stages on a SuperModel and data, in a run
directory; ``automtl.load_run``: the final model of a run; :func:`search_with_baselines`:
the searched model next to the single-task and multi-task baselines."""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from automtl.errors import AutoMTLError, CheckpointError, ConfigError
from automtl.export.derive import MultiTaskModel, derive
from automtl.io import atomic_torch_save, load_location, safe_torch_load
from automtl.methods.base import SharingMethod, make_method
from automtl.methods.blocks import restore_block_skips
from automtl.methods.masking import mask_channels
from automtl.policy import Policy
from automtl.search.batches import check_dataset
from automtl.search.build import MODEL_FORMAT, Experiment, build_experiment, build_supermodel
from automtl.search.checkpoint import load_checkpoint
from automtl.search.preflight import compiled_input_shape, preflight
from automtl.search.config import STAGES, SearchConfig, load_config
from automtl.search.distributed import Runtime, setup_runtime
from automtl.search.run import RunDir
from automtl.search.stages import STAGE_RUNNERS, Context, PostTrainResult
from automtl.search.trainer import Callback
from automtl.search.weighting import LossWeighting, make_weighting
from automtl.supermodel import SuperModel

ConfigLike = Union[None, str, os.PathLike, Mapping[str, Any], SearchConfig]


@dataclasses.dataclass
class SearchResult:
    """What a search produced. ``model`` and the metrics are None when post-train did not run.
    ``macs``: what ``model`` computes for one input of the size the SuperModel was compiled
    for (:func:`model_macs`)."""

    method: str
    policy: Policy
    model: Optional[MultiTaskModel]
    val: Optional[Dict[str, Any]]
    test: Optional[Dict[str, Any]]
    supermodel: SuperModel
    run_dir: Optional[str]
    seconds: float
    macs: Optional[int] = None

    @property
    def metrics(self) -> Optional[Dict[str, Dict[str, float]]]:
        """Per-task metrics of the final evaluation (test split when there is one)."""
        final = self.test if self.test is not None else self.val
        return None if final is None else final["metrics"]

    @property
    def parameters(self) -> Optional[int]:
        return None if self.model is None else self.model.num_parameters()


def _resolve_config(config: ConfigLike, run: Optional[RunDir], resume: bool, overrides: Sequence[str]) -> SearchConfig:
    if resume:
        if run is None or not run.exists():
            where = run.path if run is not None else "(no run directory given)"
            raise CheckpointError(f"cannot resume {where}: it holds no automtl run (no config.yaml)")
        saved = load_config(run.config_path, overrides)
        return saved
    return load_config(config, overrides)


def search(
    model: Optional[SuperModel] = None,
    train: Optional[Dataset] = None,
    val: Optional[Dataset] = None,
    test: Optional[Dataset] = None,
    *,
    config: ConfigLike = None,
    out: Optional[Union[str, os.PathLike]] = None,
    resume: bool = False,
    method: Union[None, str, SharingMethod] = None,
    weighting: Union[None, str, LossWeighting] = None,
    stages: Optional[Sequence[str]] = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    overrides: Sequence[str] = (),
    spec: Optional[Mapping[str, Any]] = None,
    label: str = "",
) -> SearchResult:
    """Search a sharing policy and train the model it gives.

    Either pass a compiled ``model`` (:func:`automtl.compile`) with ``train``/``val`` (and
    optionally ``test``) datasets of ``(image, {task: target})`` samples, or leave them out and
    name a benchmark in the config (``data.benchmark``; the backbone and tasks then come from
    ``model.*`` or the benchmark's defaults).

    * ``config``: a :class:`SearchConfig`, a mapping or a YAML path; ``overrides``:
      ``"key.path=value"`` strings applied on top.
    * ``out``: the run directory (config, metrics.jsonl, policy.json, checkpoints, final
      model); without it nothing is written and the run cannot be resumed.
    * ``resume``: continue the run in ``out`` where it stopped (its saved config is used).
    * ``method`` / ``weighting``: a name or a strategy object (default: the config's).
    * ``stages``: run only these stages; the others load their results from ``out`` when
      they finished there before.
    * ``callbacks``: :class:`~automtl.search.trainer.Callback` objects; ``progress=False``
      silences the progress bars.
    """
    started = time.perf_counter()
    run = RunDir(out) if out is not None else None
    cfg = _resolve_config(config, run, resume, overrides)
    runtime = setup_runtime(cfg.device, cfg.amp)
    if run is not None:
        run.writer = runtime.is_main
        if not resume and os.path.exists(run.checkpoints) and os.listdir(run.checkpoints):
            raise ConfigError(
                f"{run.path} already holds a run; resume it (--resume {run.path}) or choose another --out"
            )
    if stages is not None:
        for stage in stages:
            if stage not in STAGES:
                raise ConfigError(f"unknown stage '{stage}'; the stages are {', '.join(STAGES)}")

    if model is None:
        if train is not None or val is not None:
            raise ConfigError("pass the SuperModel together with its datasets: automtl.search(model, train, val)")
        experiment = build_experiment(cfg)
        model, train, val, test = experiment.supermodel, experiment.train, experiment.val, experiment.test
        spec = experiment.spec
    elif train is None or val is None:
        raise ConfigError("automtl.search(model, train, val): a SuperModel needs a training and a validation dataset")
    if not isinstance(model, SuperModel):
        raise ConfigError(f"automtl.search needs a SuperModel (from automtl.compile), got {type(model).__name__}")
    for name, dataset in (("training", train), ("validation", val), ("test", test)):
        if dataset is not None:
            check_dataset(dataset, model.task_names, name)

    strategy = make_method(method if method is not None else cfg.method, cfg)
    loss_weighting = weighting if isinstance(weighting, LossWeighting) else make_weighting(
        weighting if weighting is not None else cfg.weighting, {t.name: t.weight for t in model.tasks}
    )
    model.to(runtime.device)
    loss_weighting.to(runtime.device)
    strategy.prepare(model)
    preflight(model, train, runtime)  # a mistake in how model, data and losses fit is reported now, not in step 1

    if run is not None:
        run.prepare()
        run.write_text("config.yaml", cfg.to_yaml())
        run.write_json(
            "run.json",
            {
                "format": "automtl.run",
                "version": 1,
                "method": strategy.name,
                "weighting": getattr(loss_weighting, "name", type(loss_weighting).__name__),
                "stages": list(strategy.stages),
                "world_size": runtime.world,
                "device": str(runtime.device),
                "spec": dict(spec) if spec is not None else None,
                "tasks": list(model.task_names),
            },
        )
    # after config.yaml: a run killed right after writing init.pt must still be resumable
    initial_state = _initial_state(model, run, runtime)
    ctx = Context(
        config=cfg,
        sm=model,
        train=train,  # type: ignore[arg-type]
        val=val,  # type: ignore[arg-type]
        test=test,
        method=strategy,
        weighting=loss_weighting,
        runtime=runtime,
        run=run,
        initial_state=initial_state,
        callbacks=list(callbacks),
        progress=progress,
        label=label or strategy.name,
    )
    post: Optional[PostTrainResult] = None
    for cb in callbacks:
        cb.on_search_start(model, run)
    try:
        for stage in strategy.stages:
            if stages is None or stage in stages:
                outcome = STAGE_RUNNERS[stage](ctx)
                if stage == "post_train":
                    post = outcome
            else:
                _load_finished(ctx, stage)
    finally:
        for cb in callbacks:
            cb.on_search_end()

    seconds = time.perf_counter() - started
    if post is None:
        return SearchResult(strategy.name, Policy.argmax(model), None, None, None, model, run.path if run else None, seconds)
    macs = model_macs(post.model, model)
    if run is not None and runtime.is_main:
        save_final_model(run, post.model, post.policy, spec, [b.merge for b in model.block_skips.blocks])
        run.write_json(
            "results.json",
            {
                "method": strategy.name,
                "parameters": post.model.num_parameters(),
                "parameters_per_task": {t: post.model.num_parameters(t) for t in post.model.task_names},
                "macs": macs,
                "input_size": input_size_of(model),
                "policy_counts": {name: post.policy.count(name) for name in ("shared", "own", "skip")},
                "val": post.val,
                "test": post.test,
                "seconds": seconds,
                # a choice among re-trained candidates (AdaShare's draw: retrain): one record each
                **({"candidates": post.candidates} if post.candidates is not None else {}),
            },
        )
    return SearchResult(strategy.name, post.policy, post.model, post.val, post.test, model, run.path if run else None, seconds, macs)


def input_size_of(sm: SuperModel) -> Optional[List[int]]:
    """One input's size (no batch): that of the example input ``sm`` was compiled with."""
    shape = compiled_input_shape(sm)
    return None if shape is None or len(shape) < 2 else [int(s) for s in shape[1:]]


def model_macs(model: MultiTaskModel, sm: SuperModel) -> Optional[int]:
    """The MACs ``model`` (derived from ``sm``) computes for one input of ``sm``'s size, work
    shared by several tasks counted once: :func:`automtl.export.model_cost`'s total, the
    count the results tables show. None, with a warning, when it cannot be counted - a
    trained model is not thrown away for want of its cost."""
    from automtl.export.cost import model_cost

    size = input_size_of(sm)
    if size is None:
        warnings.warn("the model's MACs are not counted: the SuperModel has no example input shape", stacklevel=2)
        return None
    try:
        return model_cost(model, size).macs
    except AutoMTLError as exc:
        warnings.warn(f"the model's MACs are not counted: {exc}", stacklevel=2)
        return None


def _initial_state(model: SuperModel, run: Optional[RunDir], runtime: Runtime) -> Dict[str, torch.Tensor]:
    """The SuperModel's weights before any training (post-train's ``init: initial``), kept in
    ``checkpoints/init.pt`` so that a resumed run starts its post-train from the same ones."""
    path = run.checkpoint("init") if run is not None else None
    if path is not None and os.path.exists(path):
        state = load_checkpoint(path, "init")["model"]
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{path} does not fit this SuperModel: {str(exc).splitlines()[0]}") from exc
        return state
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if path is not None and runtime.is_main:
        from automtl.search.checkpoint import save_checkpoint

        save_checkpoint(path, {"stage": "init", "step": 0, "done": True, "model": state})
    return state


def _load_finished(ctx: Context, stage: str) -> None:
    """A stage not asked for: take its result from the run directory when it finished there."""
    if ctx.run is None or stage == "post_train":
        return
    path = ctx.run.checkpoint(stage)
    if os.path.exists(path):
        state = load_checkpoint(path, stage)
        if state["done"]:
            ctx.sm.load_state_dict(state["model"])
            ctx.finished(state)


# -- the final model -------------------------------------------------------------------------

def save_final_model(
    run: RunDir, model: MultiTaskModel, policy: Policy, spec: Optional[Mapping[str, Any]], block_skips: Sequence[str] = ()
) -> None:
    """``model/weights.pt`` (state_dict) and ``model/model.json`` (how to rebuild it;
    ``block_skips``: the residual blocks, by addition node, a task may skip as a whole)."""
    os.makedirs(run.model_dir, exist_ok=True)
    atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, os.path.join(run.model_dir, "weights.pt"))
    run.write_json(
        os.path.join("model", "model.json"),
        {
            "format": "automtl.final_model",
            "version": 1,
            "spec": dict(spec) if spec is not None else None,
            "tasks": list(model.task_names),
            "policy": policy.to_dict(),
            "parameters": model.num_parameters(),
            # Maximum Roaming's per-task channel masks (their values are in weights.pt)
            "channel_masks": list(getattr(model, "mask_layers", ())),
            # AdaShare's whole-block skips (automtl.block_skip), by the blocks' addition nodes
            "block_skips": list(block_skips),
        },
    )


def load_run(
    run_dir: Union[str, os.PathLike], supermodel: Optional[SuperModel] = None, map_location: Any = None, trust_code: bool = False
) -> Tuple[MultiTaskModel, Dict[str, Any]]:
    """The final derived model of a finished run, in eval mode, and its metadata
    (``model/model.json``: spec, tasks, policy, parameters). ``map_location`` (as
    ``torch.load`` takes it, e.g. ``"cuda"``; default: the CPU) is where the weights are
    loaded, and so where the model is.

    A run of a benchmark or of a config rebuilds its model from the saved spec, on the meta
    device (the architecture only: the SuperModel is not materialised, no pretrained weights
    are read), and assigns the saved weights; a backbone of your own
    (``module:<package.module>:<factory>``) is imported and called only with
    ``trust_code=True``. A run of a SuperModel built in Python has no spec: pass the same
    SuperModel (``supermodel=``)."""
    from automtl.export.saved import assign_state
    from automtl.importing import refusing_code

    run = RunDir(run_dir, writer=False)
    meta = run.read_json(os.path.join("model", "model.json"))
    if not isinstance(meta, dict) or meta.get("format") != "automtl.final_model":
        raise CheckpointError(f"{run.file('model', 'model.json')} is not an automtl final-model description")
    if supermodel is None:
        spec = meta.get("spec")
        if not spec:
            raise CheckpointError(
                f"the run in {run.path} searched a SuperModel built in Python, so it cannot be rebuilt from "
                "the run directory alone; pass the same SuperModel: automtl.load_run(run_dir, supermodel=sm)"
            )
        if spec.get("format") != MODEL_FORMAT:
            raise CheckpointError(f"{run.file('model', 'model.json')}: its spec is not a model spec")
        try:
            with refusing_code(None if trust_code else run.file("model", "model.json")):
                supermodel, _ = build_supermodel(spec, meta=True)
        except ConfigError as exc:
            raise CheckpointError(f"cannot rebuild the model of {run.path}: {exc}") from exc
    if meta.get("block_skips"):
        _set_block_skips(supermodel, meta["block_skips"], run.file("model", "model.json"))
    policy = Policy.from_dict(supermodel, meta["policy"])
    model = derive(supermodel, policy)
    if meta.get("channel_masks"):
        model = mask_channels(model, meta["channel_masks"])
    state = safe_torch_load(run.file("model", "weights.pt"), map_location=load_location(map_location))
    assign_state(model, state, f"{run.file('model', 'weights.pt')} does not fit")
    return model.eval(), meta


def _set_block_skips(supermodel: SuperModel, merges: Sequence[str], where: str) -> None:
    """Give ``supermodel`` the whole-block skips a run's final model was derived with."""
    missing = restore_block_skips(supermodel, merges)
    if missing:
        raise CheckpointError(f"{where} names residual blocks this SuperModel does not have: {', '.join(missing[:5])}")


# -- the comparison ---------------------------------------------------------------------------

@dataclasses.dataclass
class Comparison:
    """The searched model and its baselines, ready for :func:`automtl.search.report.results_table`."""

    searched: SearchResult
    single_task: Optional[SearchResult]
    multi_task: Optional[SearchResult]
    single_task_metrics: Dict[str, Dict[str, float]]
    single_task_parameters: int
    higher_is_better: Dict[str, Dict[str, bool]]
    run_dir: Optional[str]
    single_task_macs: Optional[int] = None
    input_size: Optional[List[int]] = None  # the MACs are counted for one input of this size


def search_with_baselines(
    config: ConfigLike = None,
    out: Optional[Union[str, os.PathLike]] = None,
    resume: bool = False,
    *,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    overrides: Sequence[str] = (),
    experiment: Optional[Experiment] = None,
    data: Any = None,
) -> Comparison:
    """Run the config's method, then the single-task (all-own) and multi-task (all-shared)
    baselines with the same data, backbone, seed and post-train settings (in
    ``out/baselines/<name>``), as the config's ``baselines`` section asks. ``data``: your own
    data instead of the config's (a :class:`~automtl.data.Benchmark`, a mapping of its
    fields, or a dataset factory: :func:`automtl.data.load_dataset`)."""
    run = RunDir(out) if out is not None else None
    cfg = _resolve_config(config, run, resume, overrides)
    if experiment is None:
        experiment = build_experiment(cfg, data)
    elif data is not None:
        raise ConfigError("search_with_baselines: give either experiment= or data=, not both")
    common = dict(config=cfg, callbacks=callbacks, progress=progress, overrides=overrides)

    def one(method: str, where: Optional[RunDir], sm: SuperModel) -> SearchResult:
        path = where.path if where is not None else None
        again = resume and where is not None and where.exists()
        return search(
            sm, experiment.train, experiment.val, experiment.test, out=path, resume=again, method=method,
            spec=experiment.spec, label=method, **common,  # type: ignore[arg-type]
        )

    searched = one(cfg.method, run, experiment.supermodel)
    single = multi = None
    if cfg.baselines.single_task and not cfg.baselines.file:
        single = one("single_task", run.sub("single_task") if run else None, build_supermodel(experiment.spec)[0])
    if cfg.baselines.multi_task:
        multi = one("multi_task", run.sub("multi_task") if run else None, build_supermodel(experiment.spec)[0])

    from automtl.tasks import higher_is_better_of, load_baseline, save_baseline

    tasks = experiment.supermodel.tasks
    directions = higher_is_better_of(tasks)
    if cfg.baselines.file:
        stl_metrics = load_baseline(cfg.baselines.file)
    elif single is not None and single.metrics is not None:
        stl_metrics = single.metrics
    else:
        stl_metrics = {}
    stl_model = derive(experiment.supermodel, Policy.all_own(experiment.supermodel))
    stl_params = stl_model.num_parameters()
    stl_macs = model_macs(stl_model, experiment.supermodel)
    is_main = not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_rank() == 0
    if run is not None and is_main and single is not None and single.metrics is not None:
        save_baseline(run.file("baseline.json"), single.metrics)
    return Comparison(searched, single, multi, stl_metrics, stl_params, directions, run.path if run else None, stl_macs,
                      input_size_of(experiment.supermodel))
