"""The three stages of the search, each resumable from its own checkpoint.

1. :func:`run_pretrain` - warm-up: the sharing method's pre-train mode (AutoMTL: every
   option of every node averaged), weights only, all tasks jointly, on the whole training set.
2. :func:`run_policy_train` - weights and policy logits updated alternately, on two disjoint
   splits of the training set, in Gumbel-softmax mode with τ annealed; a weight step computes
   no gradient for the logits, a policy step none for the weights and keeps the normalisation
   statistics as they were; the policy loss is Σ λᵢ Lᵢ plus the method's policy term.
3. :func:`run_post_train` - a hard policy is drawn by the method, the fixed model derived
   (weights re-initialised as the config says), trained, and evaluated.

A stage whose checkpoint says it is done only loads its result; one with a checkpoint part
way resumes from it; otherwise it starts from what the previous stage left in the
SuperModel. Each fresh stage seeds the RNGs from (seed, stage, rank), so it is reproducible
on its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import Dataset

from automtl.compiler.ir import OPTIONS
from automtl.errors import AutoMTLError, CheckpointError, ConfigError, DataError
from automtl.export.derive import MultiTaskModel, derive
from automtl.policy import Policy
from automtl.search.batches import BatchStream, eval_batches, split_indices, to_device
from automtl.search.checkpoint import capture_rng, load_checkpoint, pick_rng, restore_rng, save_checkpoint, seed_everything
from automtl.search.config import OptimizerConfig, SchedulerConfig, SearchConfig
from automtl.search.distributed import (
    Runtime,
    average_gradients,
    broadcast_,
    broadcast_object,
    frozen,
    gather_objects,
    wrap_ddp,
)
from automtl.search.run import RunDir, dumps
from automtl.search.schedule import TauSchedule
from automtl.methods.base import SharingMethod
from automtl.search.trainer import Callback, StageLoop
from automtl.search.weighting import LossWeighting
from automtl.supermodel import SuperModel
from automtl.tasks.losses import label_checks
from automtl.task import Task

_STAGE_INDEX = {"pretrain": 1, "policy_train": 2, "post_train": 3}

#: keyword arguments of ``torch.compile`` under ``compile: true`` (the default backend: inductor)
COMPILE_OPTIONS: Dict[str, Any] = {}


@dataclasses.dataclass
class Context:
    """What every stage of one run shares."""

    config: SearchConfig
    sm: SuperModel
    train: Dataset
    val: Dataset
    test: Optional[Dataset]
    method: SharingMethod
    weighting: LossWeighting
    runtime: Runtime
    run: Optional[RunDir]
    initial_state: Dict[str, torch.Tensor]
    callbacks: Sequence[Callback] = ()
    progress: bool = True
    label: str = ""
    #: metrics.jsonl lines accounted for by the last finished stage
    lines_done: int = 0

    # -- seeds ----------------------------------------------------------------------------
    def seed(self, stage: str, purpose: int = 0) -> int:
        return int(self.config.seed) * 1000 + _STAGE_INDEX[stage] * 10 + purpose

    def begin_fresh(self, stage: str) -> None:
        """A stage starts from the beginning: forget later log lines, seed the RNGs."""
        if self.run is not None:
            self.run.truncate_metrics(self.lines_done)
        seed_everything(self.seed(stage) + 7 * self.runtime.rank)

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint(self, stage: str) -> Optional[Dict[str, Any]]:
        if self.run is None:
            return None
        path = self.run.checkpoint(stage)
        if not os.path.exists(path):
            return None
        return load_checkpoint(path, stage)

    def finished(self, state: Mapping[str, Any]) -> None:
        self.lines_done = int(state["metrics_lines"])

    def save(self, stage: str, step: int, done: bool, state: Dict[str, Any]) -> Optional[str]:
        """Write a checkpoint (a collective call: every rank hands in its RNG state)."""
        rngs = gather_objects(capture_rng(), self.runtime)
        if self.run is None:
            return None
        if done:
            self.lines_done = self.run.metrics_lines
        if not self.runtime.is_main:
            return None
        path = self.run.checkpoint(stage)
        save_checkpoint(
            path,
            {
                "stage": stage,
                "step": int(step),
                "done": bool(done),
                "world": self.runtime.world,
                "rng": rngs,
                "metrics_lines": self.run.metrics_lines,
                **state,
            },
        )
        return path

    def resume_common(self, state: Mapping[str, Any]) -> None:
        """Restore what every stage's checkpoint holds besides its own objects."""
        if self.run is not None:
            self.run.truncate_metrics(int(state["metrics_lines"]))
        restore_rng(pick_rng(state["rng"], self.runtime.rank, self.runtime.world, self.run.checkpoint(state["stage"]) if self.run else ""))

    def loop(self) -> StageLoop:
        return StageLoop(self.run, self.runtime, self.config.logging, self.callbacks, self.progress, self.label)

    # -- data -----------------------------------------------------------------------------
    def stream(self, stage: str, purpose: int, indices: Optional[List[int]] = None, name: str = "train") -> BatchStream:
        data = self.config.data
        return BatchStream(
            self.train,
            indices,
            data.batch_size,
            seed=self.seed(stage, purpose),
            rank=self.runtime.rank,
            world=self.runtime.world,
            num_workers=data.num_workers,
            name=name,
            pin_memory=self.runtime.device.type == "cuda",
        )

    def compiled(self, model: nn.Module) -> nn.Module:
        """``model`` under ``torch.compile`` when the config says ``compile: true`` (the module
        itself, its parameters shared, is what checkpoints and evaluations use)."""
        if not self.config.compile:
            return model
        return torch.compile(model, **COMPILE_OPTIONS)

    @property
    def tasks(self) -> Sequence[Task]:
        return self.sm.tasks


# -- building blocks -----------------------------------------------------------------------

def make_optimizer(cfg: OptimizerConfig, params: Sequence[torch.nn.Parameter]) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def make_scheduler(cfg: SchedulerConfig, optimizer: torch.optim.Optimizer, steps: int) -> Optional[Any]:
    """A schedule stepped once per optimiser step (None for a constant learning rate)."""
    if cfg.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps), eta_min=cfg.min_lr)
    return None


def task_losses(
    outputs: Mapping[str, torch.Tensor], targets: Mapping[str, Any], tasks: Sequence[Task], checked: bool = True
) -> Dict[str, torch.Tensor]:
    """Every task's loss. ``checked=False`` (the training steps): the built-in losses skip their
    label checks, which read the device every step - the pre-flight check ran them on the first
    batch; a loss that fails is run again with the checks on, so that a label out of range is
    still named (on the CPU; on a GPU it stops the process with a device-side assert)."""
    if checked:
        return _task_losses(outputs, targets, tasks)
    try:
        with label_checks(False):
            return _task_losses(outputs, targets, tasks)
    except Exception as exc:
        if isinstance(exc, AutoMTLError):
            raise
        try:
            _task_losses(outputs, targets, tasks)
        except DataError as named:
            raise named from exc
        raise


def _task_losses(outputs: Mapping[str, torch.Tensor], targets: Mapping[str, Any], tasks: Sequence[Task]) -> Dict[str, torch.Tensor]:
    losses: Dict[str, torch.Tensor] = {}
    for task in tasks:
        if task.loss is None:
            raise ConfigError(f"task '{task.name}' has no loss; give it one (Task(..., loss=...)) to train it")
        prediction = outputs[task.name]
        if prediction.is_floating_point():
            prediction = prediction.float()  # losses in float32 under mixed precision
        losses[task.name] = task.loss(prediction, targets[task.name])
    return losses


def _log_losses(total: torch.Tensor, losses: Mapping[str, torch.Tensor], key: str = "loss") -> Dict[str, Any]:
    """The step's losses to log, kept as tensors: the loop reads them back at its log steps."""
    values = {key: total.detach()}
    values.update({f"{key}/{name}": v.detach() for name, v in losses.items()})
    return values


@contextlib.contextmanager
def kept_norm_statistics(model: nn.Module) -> Iterator[None]:
    """Run normalisation layers on batch statistics but leave their running statistics (and
    counters) as they were: policy steps must not change the weights' side of the model."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats and m.training:
            saved.append((m, [b.detach().clone() if b is not None else None for b in (m.running_mean, m.running_var, m.num_batches_tracked)]))
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in saved:
                if mean is not None:
                    m.running_mean.copy_(mean)
                if var is not None:
                    m.running_var.copy_(var)
                if count is not None:
                    m.num_batches_tracked.copy_(count)


@contextlib.contextmanager
def fixed_policy(sm: SuperModel, policy: Policy) -> Iterator[None]:
    """Run ``sm`` in fixed mode with ``policy`` inside the block, then restore its mode."""
    mode, tau, hard, previous = sm.mode, sm.tau, sm.hard_gumbel, sm.policy
    sm.set_mode("fixed", policy=policy)
    try:
        yield
    finally:
        sm.set_mode(mode, tau=tau, hard=hard, policy=previous)
        sm.policy = previous


def evaluate(ctx: Context, model: nn.Module, dataset: Dataset, split: str = "val") -> Dict[str, Any]:
    """Mean loss per task, Σ λᵢ Lᵢ and each task's metrics over ``dataset`` (eval mode, no
    gradients, no RNG use). Every rank evaluates the whole split, so all get the same result."""
    data = ctx.config.data
    tasks = ctx.tasks
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    metrics = {t.name: t.metrics() for t in tasks if t.metrics is not None}
    sums = {t.name: 0.0 for t in tasks}
    count = 0
    try:
        with torch.no_grad():
            pin = ctx.runtime.device.type == "cuda"
            for batch in eval_batches(dataset, data.eval_batch_size, data.max_eval_batches, data.num_workers, pin):
                images, targets = to_device(batch, ctx.runtime.device)
                with ctx.runtime.autocast():
                    outputs = model(images)
                losses = task_losses(outputs, targets, tasks)
                n = images.shape[0]
                count += n
                for task in tasks:
                    sums[task.name] += float(losses[task.name]) * n
                    if task.name in metrics:
                        prediction = outputs[task.name]
                        metrics[task.name].update(prediction.float() if prediction.is_floating_point() else prediction, targets[task.name])
    finally:
        for m, flag in flags:
            m.training = flag
    mean = {name: s / max(count, 1) for name, s in sums.items()}
    return {
        "split": split,
        "loss": mean,
        "weighted_loss": sum(t.weight * mean[t.name] for t in tasks),
        "metrics": {name: metric.compute() for name, metric in metrics.items()},
    }


def policy_summary(sm: SuperModel) -> Dict[str, Any]:
    """Share of (task, node) pairs whose most likely option is shared / own / skip, and the
    mean entropy of the policy distribution (nats)."""
    probs = sm.policy_probs()
    stacked = torch.cat([p for p in probs.values()], dim=0)  # [nodes*tasks, 3]
    choice = stacked.argmax(dim=1)
    entropy = -(stacked.clamp_min(1e-12).log() * stacked).sum(dim=1).mean()
    return {
        "argmax_share": {name: float((choice == i).float().mean()) for i, name in enumerate(OPTIONS)},
        "entropy": float(entropy),
    }


def _logit_names(sm: SuperModel) -> List[str]:
    return [f"vcns.{node}.logits" for node in sm.searchable_nodes]


def _sched_state(s: Optional[Any]) -> Optional[Dict[str, Any]]:
    return None if s is None else s.state_dict()


def _restore_optim(state: Mapping[str, Any], optimizers: Mapping[str, Any], schedulers: Mapping[str, Any]) -> None:
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    for name, sched in schedulers.items():
        if sched is not None:
            if state["schedulers"].get(name) is None:
                raise CheckpointError(f"the checkpoint has no state for scheduler '{name}'; the config changed since it was written")
            sched.load_state_dict(state["schedulers"][name])


# -- stage 1 -------------------------------------------------------------------------------

def run_pretrain(ctx: Context) -> None:
    cfg = ctx.config.pretrain
    sm, runtime = ctx.sm, ctx.runtime
    state = ctx.checkpoint("pretrain")
    if state is not None and state["done"]:
        sm.load_state_dict(state["model"])
        ctx.finished(state)
        return
    ctx.method.pretrain_mode(sm)
    weights = sm.weight_parameters() + list(ctx.weighting.parameters())
    optimizer = make_optimizer(cfg.optimizer, weights)
    scheduler = make_scheduler(cfg.scheduler, optimizer, cfg.steps)
    scaler = runtime.grad_scaler()
    stream = ctx.stream("pretrain", 1)
    start, window = 0, None
    if state is not None:
        sm.load_state_dict(state["model"])
        _restore_optim(state, {"weights": optimizer}, {"weights": scheduler})
        scaler.load_state_dict(state["scaler"])
        ctx.weighting.load_state_dict(state["weighting"])
        stream.load_state_dict(state["streams"]["train"])
        ctx.resume_common(state)
        start, window = int(state["step"]), state["window"]
    else:
        ctx.begin_fresh("pretrain")
    sm.train()
    model = ctx.compiled(wrap_ddp(sm, runtime, ignore=_logit_names(sm), find_unused=True))
    arch = sm.arch_parameters()

    def step(i: int) -> Dict[str, Any]:
        images, targets = to_device(stream.next(), runtime.device)
        optimizer.zero_grad(set_to_none=True)
        ctx.method.before_step(sm, "pretrain", i)
        with frozen(arch):
            with runtime.autocast():
                outputs = model(images)
            losses = task_losses(outputs, targets, ctx.tasks, checked=False)
            total = ctx.weighting.backward(losses, scale=scaler.scale, params=weights)
        average_gradients(ctx.weighting.parameters(), runtime)  # a weighting's own parameters live outside DDP
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        return {**_log_losses(total, losses), "lr": optimizer.param_groups[0]["lr"]}

    def save(step_done: int, done: bool, win: Dict[str, List[float]]) -> Optional[str]:
        return ctx.save(
            "pretrain",
            step_done,
            done,
            {
                "model": sm.state_dict(),
                "optimizers": {"weights": optimizer.state_dict()},
                "schedulers": {"weights": _sched_state(scheduler)},
                "scaler": scaler.state_dict(),
                "weighting": ctx.weighting.state_dict(),
                "streams": {"train": stream.state_dict()},
                "window": win,
                "tau": None,
            },
        )

    try:
        with ctx.weighting.watch(sm):
            ctx.loop().loop("pretrain", cfg.steps, start, step, save, lambda: evaluate(ctx, sm, ctx.val), window)
    finally:
        stream.close()
    broadcast_(list(sm.buffers()), runtime)  # every rank continues with rank 0's normalisation statistics


# -- stage 2 -------------------------------------------------------------------------------

def run_policy_train(ctx: Context) -> None:
    cfg = ctx.config.policy_train
    sm, runtime = ctx.sm, ctx.runtime
    state = ctx.checkpoint("policy_train")
    if state is not None and state["done"]:
        sm.load_state_dict(state["model"])
        ctx.finished(state)
        _write_policy(ctx, Policy.argmax(sm))
        return
    weight_part, policy_part = split_indices(len(ctx.train), cfg.policy_fraction, ctx.seed("policy_train", 0))  # type: ignore[arg-type]
    weight_stream = ctx.stream("policy_train", 1, weight_part, "weight split")
    policy_stream = ctx.stream("policy_train", 2, policy_part, "policy split")
    taus = TauSchedule(cfg.tau_init, cfg.tau_decay, cfg.tau_decay_every or policy_stream.batches_per_epoch, cfg.tau_min)
    arch = sm.arch_parameters()
    weights = sm.weight_parameters() + list(ctx.weighting.parameters())
    weight_opt = make_optimizer(cfg.weight_optimizer, weights)
    policy_opt = make_optimizer(cfg.policy_optimizer, arch)
    rounds = cfg.weight_steps + cfg.policy_steps
    policy_total = (cfg.steps // rounds) * cfg.policy_steps + max(0, cfg.steps % rounds - cfg.weight_steps)
    weight_sched = make_scheduler(cfg.weight_scheduler, weight_opt, cfg.steps - policy_total)
    policy_sched = make_scheduler(cfg.policy_scheduler, policy_opt, policy_total)
    scaler = runtime.grad_scaler()
    start, window = 0, None
    if state is not None:
        sm.load_state_dict(state["model"])
        _restore_optim(state, {"weights": weight_opt, "policy": policy_opt}, {"weights": weight_sched, "policy": policy_sched})
        scaler.load_state_dict(state["scaler"])
        ctx.weighting.load_state_dict(state["weighting"])
        weight_stream.load_state_dict(state["streams"]["weights"])
        policy_stream.load_state_dict(state["streams"]["policy"])
        ctx.resume_common(state)
        start, window = int(state["step"]), state["window"]
    else:
        ctx.begin_fresh("policy_train")
    sm.train()
    model = ctx.compiled(wrap_ddp(sm, runtime, ignore=_logit_names(sm), find_unused=True))
    policy_model = ctx.compiled(sm)  # not through DDP: the logits' gradients are averaged after the step
    epoch_seen: List[Optional[int]] = [None]

    def policy_steps_before(i: int) -> int:
        full, position = divmod(i, rounds)
        return full * cfg.policy_steps + max(0, position - cfg.weight_steps)

    def step(i: int) -> Dict[str, Any]:
        taken = policy_steps_before(i)
        tau = taus(taken)
        sm.set_mode("gumbel", tau=tau, hard=cfg.hard)
        ctx.method.before_step(sm, "policy_train", i)
        if i % rounds < cfg.weight_steps:
            images, targets = to_device(weight_stream.next(), runtime.device)
            weight_opt.zero_grad(set_to_none=True)
            with frozen(arch):
                with runtime.autocast():
                    outputs = model(images)
                losses = task_losses(outputs, targets, ctx.tasks, checked=False)
                total = ctx.weighting.backward(losses, scale=scaler.scale, params=weights)
            average_gradients(ctx.weighting.parameters(), runtime)
            scaler.step(weight_opt)
            scaler.update()
            if weight_sched is not None:
                weight_sched.step()
            return {**_log_losses(total, losses), "tau": tau, "lr": weight_opt.param_groups[0]["lr"]}
        epoch = taus.epoch(taken)
        if epoch_seen[0] != epoch:
            ctx.method.on_policy_epoch(sm, epoch)
            epoch_seen[0] = epoch
        images, targets = to_device(policy_stream.next(), runtime.device)
        policy_opt.zero_grad(set_to_none=True)
        with frozen(weights), kept_norm_statistics(sm):
            with runtime.autocast():
                outputs = policy_model(images)
            losses = task_losses(outputs, targets, ctx.tasks, checked=False)
            extra = ctx.method.policy_loss(sm)
            total = ctx.weighting.backward(losses, extra=extra, scale=scaler.scale, params=arch)
        average_gradients(arch, runtime)
        scaler.step(policy_opt)
        scaler.update()
        if policy_sched is not None:
            policy_sched.step()
        values = {"loss_policy": total.detach(), "tau": tau, "policy_lr": policy_opt.param_groups[0]["lr"]}
        if extra is not None:
            values["loss_reg"] = extra.detach()
        return values

    def evaluate_argmax() -> Dict[str, Any]:
        with fixed_policy(sm, Policy.argmax(sm)):
            result = evaluate(ctx, sm, ctx.val)
        result["policy"] = policy_summary(sm)
        return result

    def save(step_done: int, done: bool, win: Dict[str, List[float]]) -> Optional[str]:
        return ctx.save(
            "policy_train",
            step_done,
            done,
            {
                "model": sm.state_dict(),
                "optimizers": {"weights": weight_opt.state_dict(), "policy": policy_opt.state_dict()},
                "schedulers": {"weights": _sched_state(weight_sched), "policy": _sched_state(policy_sched)},
                "scaler": scaler.state_dict(),
                "weighting": ctx.weighting.state_dict(),
                "streams": {"weights": weight_stream.state_dict(), "policy": policy_stream.state_dict()},
                "window": win,
                "tau": taus(policy_steps_before(step_done)),
            },
        )

    try:
        with ctx.weighting.watch(sm):
            ctx.loop().loop("policy_train", cfg.steps, start, step, save, evaluate_argmax, window)
    finally:
        weight_stream.close()
        policy_stream.close()
    broadcast_(list(sm.buffers()), runtime)
    _write_policy(ctx, Policy.argmax(sm))


def _write_policy(ctx: Context, policy: Policy) -> None:
    if ctx.run is not None and ctx.runtime.is_main:
        policy.save(ctx.run.policy_path)


# -- stage 3 -------------------------------------------------------------------------------

@dataclasses.dataclass
class PostTrainResult:
    model: MultiTaskModel
    policy: Policy
    val: Dict[str, Any]
    test: Optional[Dict[str, Any]]
    #: when the method chose among re-trained candidates: one record per candidate
    candidates: Optional[List[Dict[str, Any]]] = None


def _score(ctx: Context) -> Any:
    """Validation Σ λᵢ Lᵢ of the supermodel's current weights under a fixed policy."""

    def score(policy: Policy) -> float:
        with fixed_policy(ctx.sm, policy):
            return float(evaluate(ctx, ctx.sm, ctx.val)["weighted_loss"])

    return score


def draw_policy(ctx: Context) -> Policy:
    """The policy post-train trains: from ``post_train.policy`` when set, else drawn by the
    method (on rank 0, then sent to every rank so that all train the same model)."""
    sm = ctx.sm
    if ctx.config.post_train.policy:
        policy = Policy.load(sm, ctx.config.post_train.policy)
    else:
        policy = ctx.method.draw_policy(sm, _score(ctx))
    data = broadcast_object(policy.to_dict(), ctx.runtime)
    return Policy.from_dict(sm, data)


def derive_for_training(ctx: Context, policy: Policy) -> MultiTaskModel:
    """The fixed model of ``policy`` with its weights set as ``post_train.init`` says."""
    sm = ctx.sm
    init = ctx.config.post_train.init
    if init == "initial":
        trained = {k: v.detach().clone() for k, v in sm.state_dict().items()}
        sm.load_state_dict(ctx.initial_state)
        try:
            model = derive(sm, policy)
        finally:
            sm.load_state_dict(trained)
        return model
    model = derive(sm, policy)
    if init == "reset":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed("post_train", 9))
            for module in model.modules():
                if module is not model and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    return model


def run_post_train(ctx: Context) -> PostTrainResult:
    cfg = ctx.config.post_train
    state = ctx.checkpoint("post_train")
    candidates: Optional[List[Dict[str, Any]]] = None
    if state is not None and state.get("candidates") is not None and not state["done"]:
        policy, state, candidates = _choose_by_retraining(ctx, state["candidates"], state)
    elif state is not None:
        policy = Policy.from_dict(ctx.sm, state["policy"])
        candidates = (state.get("candidates") or {}).get("records")
    else:
        found = [] if cfg.policy else list(ctx.method.retrain_candidates(ctx.sm))
        if found:
            sent = broadcast_object([p.to_dict() for p in found], ctx.runtime)  # every rank trains the same ones
            policy, state, candidates = _choose_by_retraining(ctx, {"policies": sent, "records": []}, None)
        else:
            policy = draw_policy(ctx)
    _write_policy(ctx, policy)
    model = _train_policy(ctx, policy, state)
    model.eval()
    val = evaluate(ctx, model, ctx.val, "val")
    test = evaluate(ctx, model, ctx.test, "test") if ctx.test is not None else None
    if ctx.run is not None:
        ctx.loop().log({"stage": "post_train", "step": cfg.steps, "kind": "final", "val": val, "test": test})
    return PostTrainResult(model, policy, val, test, candidates)


def _choose_by_retraining(
    ctx: Context, search: Mapping[str, Any], state: Optional[Dict[str, Any]]
) -> Tuple[Policy, Dict[str, Any], List[Dict[str, Any]]]:
    """Train every candidate policy of ``search`` with the post-train settings (each from the
    same seeds), evaluate it on the validation split and keep the best (lowest Σ λᵢ Lᵢ; the
    first on a tie). The search is checkpointed between candidates and inside each, so a
    resumed run goes on where it stopped. Returns the chosen policy, a finished post-train
    state holding its trained weights, and one record per candidate."""
    sm = ctx.sm
    policies = [Policy.from_dict(sm, d) for d in search["policies"]]
    records: List[Dict[str, Any]] = [dict(r) for r in search["records"]]
    best: Optional[Dict[str, Any]] = search.get("best")
    if state is not None:
        ctx.finished(state)  # the log lines up to this checkpoint are kept
    for j in range(len(records), len(policies)):
        tag = {"policies": list(search["policies"]), "records": records, "best": best, "current": j}
        resume = state if state is not None and int(state["step"]) > 0 and state["candidates"]["current"] == j else None
        model = _train_policy(ctx, policies[j], resume, tag, final=False)
        val = evaluate(ctx, model, ctx.val, "val")
        # plain JSON values: the record goes into checkpoints (weights_only loading) and results.json
        records.append({"candidate": j, "weighted_loss": float(val["weighted_loss"]), "val": json.loads(dumps(val)),
                        "policy_counts": {name: policies[j].count(name) for name in OPTIONS}})
        if best is None or val["weighted_loss"] < records[best["index"]]["weighted_loss"]:
            best = {"index": j, "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        if ctx.run is not None:
            ctx.loop().log({"stage": "post_train", "step": ctx.config.post_train.steps, "kind": "candidate", **records[-1]})
            ctx.lines_done = ctx.run.metrics_lines  # the next candidate starts fresh after these lines
        ctx.save("post_train", 0, False, {"model": {}, "policy": policies[j].to_dict(),
                                          "candidates": {**tag, "records": records, "best": best, "current": j + 1}})
        state = None
    assert best is not None
    chosen = policies[best["index"]]
    summary = {"policies": list(search["policies"]), "records": records, "best": {"index": best["index"]}}
    done = {"done": True, "step": ctx.config.post_train.steps, "model": best["model"], "policy": chosen.to_dict(),
            "candidates": summary, "metrics_lines": ctx.run.metrics_lines if ctx.run is not None else 0}
    ctx.save("post_train", ctx.config.post_train.steps, True, {k: v for k, v in done.items() if k not in ("done", "step")})
    return chosen, done, records


def _train_policy(
    ctx: Context,
    policy: Policy,
    state: Optional[Dict[str, Any]],
    tag: Optional[Dict[str, Any]] = None,
    final: bool = True,
) -> MultiTaskModel:
    """The model of ``policy`` (derived, adapted by the method) trained with the post-train
    settings; from ``state`` when it is a checkpoint of this training (a finished one is only
    loaded). ``tag`` goes into every checkpoint as ``candidates``; a training that is not
    ``final`` (a candidate) never writes a finished checkpoint."""
    cfg = ctx.config.post_train
    runtime = ctx.runtime
    model = ctx.method.adapt_model(derive_for_training(ctx, policy), ctx.sm).to(runtime.device)
    trained = list(model.parameters()) + list(ctx.weighting.parameters())
    optimizer = make_optimizer(cfg.optimizer, trained)
    scheduler = make_scheduler(cfg.scheduler, optimizer, cfg.steps)
    scaler = runtime.grad_scaler()
    stream = ctx.stream("post_train", 1)
    start, window = 0, None
    if state is not None:
        _load_model_state(model, state["model"], ctx)
        if state["done"]:
            ctx.finished(state)
            if ctx.run is not None:
                ctx.run.truncate_metrics(ctx.lines_done)  # the final evaluation is logged again
            return model
        _restore_optim(state, {"weights": optimizer}, {"weights": scheduler})
        scaler.load_state_dict(state["scaler"])
        ctx.weighting.load_state_dict(state["weighting"])
        stream.load_state_dict(state["streams"]["train"])
        ctx.resume_common(state)
        start, window = int(state["step"]), state["window"]
    else:
        ctx.begin_fresh("post_train")

    model.train()
    wrapped = ctx.compiled(wrap_ddp(model, runtime))

    def step(i: int) -> Dict[str, Any]:
        images, targets = to_device(stream.next(), runtime.device)
        optimizer.zero_grad(set_to_none=True)
        ctx.method.before_step(model, "post_train", i)
        with runtime.autocast():
            outputs = wrapped(images)
        losses = task_losses(outputs, targets, ctx.tasks, checked=False)
        total = ctx.weighting.backward(losses, scale=scaler.scale, params=trained)
        average_gradients(ctx.weighting.parameters(), runtime)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        return {**_log_losses(total, losses), "lr": optimizer.param_groups[0]["lr"]}

    def save(step_done: int, done: bool, win: Dict[str, List[float]]) -> Optional[str]:
        if not final and done:
            return None  # a candidate's end is checkpointed with its record (_choose_by_retraining)
        extra = {"candidates": tag} if tag is not None else {}
        return ctx.save(
            "post_train",
            step_done,
            done,
            {
                "model": model.state_dict(),
                "policy": policy.to_dict(),
                "optimizers": {"weights": optimizer.state_dict()},
                "schedulers": {"weights": _sched_state(scheduler)},
                "scaler": scaler.state_dict(),
                "weighting": ctx.weighting.state_dict(),
                "streams": {"train": stream.state_dict()},
                "window": win,
                "tau": None,
                **extra,
            },
        )

    try:
        with ctx.weighting.watch(model):
            ctx.loop().loop("post_train", cfg.steps, start, step, save, lambda: evaluate(ctx, model, ctx.val), window)
    finally:
        stream.close()
    broadcast_(list(model.buffers()), runtime)
    return model


def _load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor], ctx: Context) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        where = ctx.run.checkpoint("post_train") if ctx.run is not None else "the checkpoint"
        raise CheckpointError(f"{where} does not fit the derived model: {str(exc).splitlines()[0]}") from exc


STAGE_RUNNERS = {"pretrain": run_pretrain, "policy_train": run_policy_train, "post_train": run_post_train}
