"""The configuration of a search run: one dataclass per stage, loadable from YAML.

Defaults follow the published AutoMTL settings (policy logits: Adam, lr 0.01, weight decay
5e-4; weights: lr 0.001; τ from 5, decayed by 0.965 per epoch; λ_reg = 5e-4; 400 weight steps
then 100 policy steps per round). Every value can be overridden: in a YAML file, in a
mapping, or with ``key.path=value`` strings (``--set`` on the command line). Unknown keys are
rejected with a "did you mean"; the resolved config is saved with every run.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import typing
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from automtl.errors import ConfigError
from automtl.registry import did_you_mean


class _Yaml12SafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats: ``1e-4`` is a number, not the string
    PyYAML (YAML 1.1: exponents need a dot) makes of it."""


_Yaml12SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: Any) -> Any:
    """A YAML document or scalar (a file's text, an override's value), with YAML 1.2 floats."""
    return yaml.load(text, Loader=_Yaml12SafeLoader)  # noqa: S506 - a SafeLoader subclass

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("constant", "step", "cosine")
DRAWS = ("sample", "argmax", "best_of_k")
ADASHARE_DRAWS = ("retrain",) + DRAWS  # retrain: the best of k re-trained samples (AdaShare)
INITS = ("initial", "reset", "inherit")
STAGES = ("pretrain", "policy_train", "post_train")
GRANULARITIES = ("block", "operator")
CANDIDATES = ("all", "pairs")  # grouping.candidates, the old name of grouping.mode
GROUPING_MODES = ("full", "esa", "hoa")
ESA_FRACTION = 0.2  # Standley et al.: "a pass through just 20% of our data"


@dataclasses.dataclass
class OptimizerConfig:
    """An optimiser: ``adam``, ``adamw`` or ``sgd`` (``momentum`` is used by sgd only,
    ``betas`` by adam/adamw only)."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: Tuple[float, float] = (0.9, 0.999)

    def check(self, where: str) -> None:
        _one_of(self.name, OPTIMIZERS, f"{where}.name")
        _positive(self.lr, f"{where}.lr")
        _non_negative(self.weight_decay, f"{where}.weight_decay")
        _non_negative(self.momentum, f"{where}.momentum")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"{where}.betas must be two numbers in [0, 1), got {list(self.betas)}")


@dataclasses.dataclass
class SchedulerConfig:
    """A learning-rate schedule stepped once per optimiser step: ``constant``, ``step``
    (multiply by ``gamma`` every ``step_size`` steps) or ``cosine`` (down to ``min_lr`` over
    the stage)."""

    name: str = "constant"
    step_size: int = 1000
    gamma: float = 0.5
    min_lr: float = 0.0

    def check(self, where: str) -> None:
        _one_of(self.name, SCHEDULERS, f"{where}.name")
        _positive(self.step_size, f"{where}.step_size")
        _positive(self.gamma, f"{where}.gamma")
        _non_negative(self.min_lr, f"{where}.min_lr")


@dataclasses.dataclass
class PretrainConfig:
    """Stage 1: warm-up mode (every option of every node averaged), weights only."""

    steps: int = 4000
    optimizer: OptimizerConfig = dataclasses.field(
        default_factory=lambda: OptimizerConfig("adam", 1e-3, 1e-4, betas=(0.5, 0.999))
    )
    scheduler: SchedulerConfig = dataclasses.field(default_factory=SchedulerConfig)

    def check(self, where: str) -> None:
        _non_negative(self.steps, f"{where}.steps")
        self.optimizer.check(f"{where}.optimizer")
        self.scheduler.check(f"{where}.scheduler")


@dataclasses.dataclass
class PolicyTrainConfig:
    """Stage 2: weights and policy logits updated alternately (``weight_steps`` weight steps,
    then ``policy_steps`` policy steps, repeated; ``steps`` counts both) on two disjoint
    splits of the training set (``policy_fraction`` of it for the policy), Gumbel-softmax at
    temperature τ = ``tau_init`` · ``tau_decay`` ^ epoch (an epoch being ``tau_decay_every``
    policy steps, by default one pass over the policy split), never below ``tau_min``.
    The policy loss is Σ λᵢ Lᵢ + ``lambda_reg`` · L_reg."""

    steps: int = 20000
    weight_steps: int = 400
    policy_steps: int = 100
    policy_fraction: float = 0.5
    weight_optimizer: OptimizerConfig = dataclasses.field(
        default_factory=lambda: OptimizerConfig("sgd", 1e-3, 1e-4, momentum=0.9)
    )
    policy_optimizer: OptimizerConfig = dataclasses.field(
        default_factory=lambda: OptimizerConfig("adam", 0.01, 5e-4)
    )
    weight_scheduler: SchedulerConfig = dataclasses.field(default_factory=SchedulerConfig)
    policy_scheduler: SchedulerConfig = dataclasses.field(default_factory=SchedulerConfig)
    tau_init: float = 5.0
    tau_decay: float = 0.965
    tau_decay_every: Optional[int] = None
    tau_min: float = 1e-3
    lambda_reg: float = 5e-4
    #: the per-node weights of L_reg: ``depth`` ((L − l)/L, the paper's), ``params`` (each
    #: node's share of the parameters: sharing pushed where the memory is, at any depth) or
    #: ``cost`` (half its share of the parameters, half its share of the MACs)
    reg_weights: str = "depth"
    hard: bool = False

    def check(self, where: str) -> None:
        _non_negative(self.steps, f"{where}.steps")
        _positive(self.weight_steps, f"{where}.weight_steps")
        _positive(self.policy_steps, f"{where}.policy_steps")
        if not 0.0 < self.policy_fraction < 1.0:
            raise ConfigError(
                f"{where}.policy_fraction must be strictly between 0 and 1 (the share of the "
                f"training set kept for policy steps), got {self.policy_fraction}"
            )
        self.weight_optimizer.check(f"{where}.weight_optimizer")
        self.policy_optimizer.check(f"{where}.policy_optimizer")
        self.weight_scheduler.check(f"{where}.weight_scheduler")
        self.policy_scheduler.check(f"{where}.policy_scheduler")
        _positive(self.tau_init, f"{where}.tau_init")
        if not 0.0 < self.tau_decay <= 1.0:
            raise ConfigError(f"{where}.tau_decay must be in (0, 1], got {self.tau_decay}")
        if self.tau_decay_every is not None:
            _positive(self.tau_decay_every, f"{where}.tau_decay_every")
        _positive(self.tau_min, f"{where}.tau_min")
        _non_negative(self.lambda_reg, f"{where}.lambda_reg")
        from automtl.search.regularizer import REG_WEIGHTS

        if self.reg_weights not in REG_WEIGHTS:
            raise ConfigError(
                f"{where}.reg_weights must be depth (the paper's (L - l)/L), "
                f"{' or '.join(sorted(set(REG_WEIGHTS) - {'depth'}))}, got {self.reg_weights!r}"
            )


@dataclasses.dataclass
class PostTrainConfig:
    """Stage 3: a hard policy is drawn (``draw``: ``sample`` with ``draw_seed``, ``argmax``,
    or ``best_of_k``: the best of ``k`` samples by validation loss of the policy-trained
    supermodel in fixed mode) - or read from ``policy`` (a policy.json path) - the fixed model
    is derived, its weights set to ``init`` (``initial``: the supermodel's weights before
    pre-training, i.e. trained from scratch; ``reset``: every layer's reset_parameters();
    ``inherit``: the policy-trained weights), then trained and evaluated."""

    steps: int = 20000
    optimizer: OptimizerConfig = dataclasses.field(
        default_factory=lambda: OptimizerConfig("adam", 1e-3, 1e-4, betas=(0.5, 0.999))
    )
    scheduler: SchedulerConfig = dataclasses.field(default_factory=lambda: SchedulerConfig("step", 4000, 0.5))
    draw: str = "sample"
    k: int = 8
    draw_seed: Optional[int] = None
    init: str = "initial"
    policy: Optional[str] = None

    def check(self, where: str) -> None:
        _non_negative(self.steps, f"{where}.steps")
        self.optimizer.check(f"{where}.optimizer")
        self.scheduler.check(f"{where}.scheduler")
        _one_of(self.draw, DRAWS, f"{where}.draw")
        _positive(self.k, f"{where}.k")
        _one_of(self.init, INITS, f"{where}.init")


@dataclasses.dataclass
class DataConfig:
    """Where the data come from (a built-in or on-disk benchmark, with its own ``options``,
    e.g. ``size`` or ``n_train`` for ``scenes``; or ``dataset``, a factory of your own,
    ``"package.module:factory"``, called with ``options`` as keyword arguments - see
    :func:`automtl.data.load_dataset`) and how they are batched.
    ``max_eval_batches`` caps every evaluation (None: the whole split)."""

    benchmark: Optional[str] = None
    dataset: Optional[str] = None
    root: Optional[str] = None
    data_seed: int = 0
    options: Dict[str, Any] = dataclasses.field(default_factory=dict)
    batch_size: int = 16
    eval_batch_size: int = 64
    num_workers: int = 0
    max_eval_batches: Optional[int] = None

    def check(self, where: str) -> None:
        if self.dataset is not None:
            from automtl.importing import check_import_path

            check_import_path(self.dataset, f"{where}.dataset")
            if self.benchmark is not None:
                raise ConfigError(f"{where} names both a benchmark ({self.benchmark}) and a dataset ({self.dataset}): keep one")
        _positive(self.batch_size, f"{where}.batch_size")
        _positive(self.eval_batch_size, f"{where}.eval_batch_size")
        _non_negative(self.num_workers, f"{where}.num_workers")
        if self.max_eval_batches is not None:
            _positive(self.max_eval_batches, f"{where}.max_eval_batches")


@dataclasses.dataclass
class ModelConfig:
    """The model to compile: a backbone (see :func:`automtl.backbones.parse_backbone`),
    the tasks (spec strings like ``seg:segmentation:13`` or mappings; empty: the benchmark's),
    ``task_options`` set on every built-in task whose kind takes them, over the tasks' own
    (e.g. ``head_hidden``, ``aspp_rates`` of the dense heads) and the compile options."""

    backbone: Any = None
    tasks: List[Any] = dataclasses.field(default_factory=list)
    task_options: Dict[str, Any] = dataclasses.field(default_factory=dict)
    norm: str = "follow"  # see automtl.compiler.passes.NORM_POLICIES
    searchable: List[str] = dataclasses.field(default_factory=lambda: ["conv", "linear"])

    def check(self, where: str) -> None:
        _one_of(self.norm, ("follow", "per_task", "search"), f"{where}.norm")
        for name in self.searchable:
            _one_of(name, tuple(SEARCHABLE_TYPES), f"{where}.searchable")


#: Names of operator families users can make searchable from a config: ``conv`` is every
#: convolution (transposed ones too), ``linear`` every linear layer.
SEARCHABLE_TYPES = ("conv", "linear")


@dataclasses.dataclass
class BaselineConfig:
    """The reference rows of the results table: ``single_task`` (the all-own policy trained
    with the same post-train loop: exactly independent models) and ``multi_task`` (all-shared).
    With ``file`` set, the single-task metrics are read from a stored baseline file instead."""

    single_task: bool = True
    multi_task: bool = True
    file: Optional[str] = None


@dataclasses.dataclass
class AdaShareConfig:
    """AdaShare (``method: adashare``): per-task select-or-skip, one decision per residual
    block (``granularity: block``, the paper's: a skipped block gives its input, or its own
    down-sample path's output; the stem and other nodes outside blocks always run, shared) or
    per operator (``operator``: automtl's variant, each operator's own skip); policy loss
    Σ λᵢ Lᵢ + ``lambda_sparsity`` Σ log α + ``lambda_sharing`` Σ_{k1,k2} Σₗ (L−l)/L
    |α_{l,k1} − α_{l,k2}|; with ``curriculum`` the policy of the last block is learned first
    and one more block opens per policy epoch. The final policy is ``draw``: ``retrain`` (the
    paper's: ``k`` policies sampled, each trained with the post-train settings, the best on
    validation kept - k post-trainings), ``best_of_k`` (the cheap ranking: the best of ``k``
    samples by the policy-trained supermodel's validation loss, then one post-train),
    ``sample`` or ``argmax``; samples seeded by ``draw_seed`` (default: ``seed``)."""

    lambda_sparsity: float = 1e-3
    lambda_sharing: float = 0.05
    granularity: str = "block"
    curriculum: bool = True
    draw: str = "retrain"
    k: int = 8
    draw_seed: Optional[int] = None

    def check(self, where: str) -> None:
        _non_negative(self.lambda_sparsity, f"{where}.lambda_sparsity")
        _non_negative(self.lambda_sharing, f"{where}.lambda_sharing")
        _one_of(self.granularity, GRANULARITIES, f"{where}.granularity")
        _one_of(self.draw, ADASHARE_DRAWS, f"{where}.draw")
        _positive(self.k, f"{where}.k")


@dataclasses.dataclass
class RoamingConfig:
    """Maximum Roaming (``method: roaming``): every shared convolution's output channels are
    split among the tasks by binary masks with sharing ratio ``sharing_ratio`` (p: each task
    uses each channel with probability p, drawn independently, a channel no task drew going to
    one task at random; the default 0.8 is the paper's setting on NYUv2 and CelebA);
    every ``delta`` training steps (updates, not epochs) each task swaps one channel it uses,
    drawn uniformly, for one it has never used, until every task has visited every channel. ``delta`` unset:
    the visit plan is spread over the first half of post-train. ``seed`` (default: ``seed``)
    draws the masks and swaps."""

    sharing_ratio: float = 0.8
    delta: Optional[int] = None
    seed: Optional[int] = None

    def check(self, where: str) -> None:
        if not 0.0 <= self.sharing_ratio <= 1.0:
            raise ConfigError(f"{where}.sharing_ratio must be in [0, 1] (0: disjoint channels, 1: all shared), got {self.sharing_ratio}")
        if self.delta is not None:
            _positive(self.delta, f"{where}.delta")


@dataclasses.dataclass
class GroupingConfig:
    """Task grouping (``automtl group``, Standley et al. 2020). ``mode``: ``full`` (the paper's
    main method: a network per non-empty subset of tasks, each trained for all
    ``post_train.steps``), ``esa`` (early-stopping approximation: the same networks trained for
    ``fraction`` of the steps, 0.2 unless set) or ``hoa`` (higher-order approximation: only
    networks of one or two tasks trained, larger ones predicted from the pairs). ``half_size``
    adds half-size single-task networks (widths scaled so the network costs about half);
    ``budgets``: inference-cost budgets in single-task networks (the mean MACs of the full-size
    single-task networks, heads included; empty: the all-task network's cost, then 1.5, 2,
    ..., number of tasks). The chosen networks not yet trained fully are then trained for all
    ``post_train.steps``.

    Old keys still load: ``candidates: pairs`` is ``mode: hoa``, ``candidates: all`` is
    ``full`` (``esa`` with a ``fraction`` < 1); with no ``mode``, a ``fraction`` < 1 means
    ``esa``. ``fraction`` < 1 with ``hoa`` trains the pairs for that share of the steps."""

    mode: Optional[str] = None
    half_size: bool = True
    fraction: Optional[float] = None
    budgets: List[float] = dataclasses.field(default_factory=list)
    candidates: Optional[str] = None  # the old name of ``mode`` (all: full/esa, pairs: hoa)

    @property
    def resolved_mode(self) -> str:
        """``full``, ``esa`` or ``hoa``: ``mode``, else what the old keys say, else ``full``."""
        if self.mode is not None:
            return self.mode
        if self.candidates == "pairs":
            return "hoa"
        return "esa" if self.fraction is not None and self.fraction < 1.0 else "full"

    @property
    def steps_fraction(self) -> float:
        """The share of ``post_train.steps`` a trained candidate gets before the choice."""
        if self.fraction is not None:
            return self.fraction
        return ESA_FRACTION if self.resolved_mode == "esa" else 1.0

    def check(self, where: str) -> None:
        if self.mode is not None:
            _one_of(self.mode, GROUPING_MODES, f"{where}.mode")
        if self.candidates is not None:
            _one_of(self.candidates, CANDIDATES, f"{where}.candidates")
            implied = ("hoa",) if self.candidates == "pairs" else ("full", "esa")
            if self.mode is not None and self.mode not in implied:
                raise ConfigError(
                    f"{where}.candidates={self.candidates} (the old name of {where}.mode: all is full or esa, "
                    f"pairs is hoa) contradicts {where}.mode={self.mode}: drop {where}.candidates"
                )
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"{where}.fraction must be in (0, 1], got {self.fraction}")
        mode = self.resolved_mode
        if mode == "full" and self.steps_fraction < 1.0:
            raise ConfigError(
                f"{where}.mode=full trains every candidate for all post_train.steps, but {where}.fraction is "
                f"{self.fraction}: set {where}.mode=esa for the early-stopping approximation, or drop {where}.fraction"
            )
        if mode == "esa" and self.steps_fraction >= 1.0:
            raise ConfigError(
                f"{where}.mode=esa trains the candidates for a fraction < 1 of post_train.steps, got {where}.fraction="
                f"{self.fraction}: that is {where}.mode=full"
            )
        for i, budget in enumerate(self.budgets):
            _positive(budget, f"{where}.budgets[{i}]")


@dataclasses.dataclass
class LoggingConfig:
    """How often to log (``metrics.jsonl``), evaluate and checkpoint, in steps of a stage
    (0: only at the end of the stage)."""

    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 500
    progress: bool = True

    def check(self, where: str) -> None:
        _positive(self.log_every, f"{where}.log_every")
        _non_negative(self.eval_every, f"{where}.eval_every")
        _non_negative(self.checkpoint_every, f"{where}.checkpoint_every")


@dataclasses.dataclass
class SearchConfig:
    """Everything a search run needs. ``device``: ``auto`` (CUDA when present), ``cpu``,
    ``cuda``, ``cuda:1``...; ``amp``: mixed precision (float16 on CUDA, bfloat16 on the CPU);
    ``method``: the sharing method (see :mod:`automtl.methods`); ``weighting``: the
    loss weighting (see :mod:`automtl.search.weighting`); ``compile``: train through
    ``torch.compile`` (opt-in: the first steps of each stage wait for the compiler)."""

    seed: int = 0
    device: str = "auto"
    amp: bool = False
    compile: bool = False
    method: str = "automtl"
    weighting: str = "equal"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    pretrain: PretrainConfig = dataclasses.field(default_factory=PretrainConfig)
    policy_train: PolicyTrainConfig = dataclasses.field(default_factory=PolicyTrainConfig)
    post_train: PostTrainConfig = dataclasses.field(default_factory=PostTrainConfig)
    baselines: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)
    adashare: AdaShareConfig = dataclasses.field(default_factory=AdaShareConfig)
    roaming: RoamingConfig = dataclasses.field(default_factory=RoamingConfig)
    grouping: GroupingConfig = dataclasses.field(default_factory=GroupingConfig)
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)

    def check(self) -> "SearchConfig":
        """Raise :class:`ConfigError` on a value out of range; return self."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "check"):
                value.check(f.name)
        return self

    # -- conversions ----------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]], source: str = "config") -> "SearchConfig":
        return load_config(data, source=source)

    def replace(self, **changes: Any) -> "SearchConfig":
        return dataclasses.replace(self, **changes)


# -- loading -----------------------------------------------------------------------------

def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    return did_you_mean(name, choices, cutoff=0.5)


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (YAML/JSON-friendly)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (and build nested dataclasses)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Union:
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return _convert(value, inner[0], where)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping of {_type_name(tp)} settings, got {value!r}")
        return _build(tp, value, where)
    if origin in (tuple, Tuple):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (list, List):
        (arg,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_convert(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            path = f"{where}.{key}" if where else str(key)
            raise ConfigError(
                f"unknown config key '{path}'{_did_you_mean(str(key), names)}; "
                f"{where or 'the top level'} takes: {', '.join(names)}"
            )
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(value, Mapping):
            # a partial section keeps this field's own defaults for what it leaves out (e.g. the
            # policy optimiser's lr 0.01 and weight decay 5e-4), not the section class's
            value = merge(_plain(dataclasses.asdict(_field_default(f))), value)
        values[f.name] = _convert(value, hints[f.name], f"{where}.{f.name}" if where else f.name)
    return cls(**values)


def _field_default(f: "dataclasses.Field[Any]") -> Any:
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return f.default


def load_config(
    data: Union[None, str, os.PathLike, Mapping[str, Any], SearchConfig] = None,
    overrides: Sequence[str] = (),
    source: str = "config",
) -> SearchConfig:
    """A checked :class:`SearchConfig` from a YAML file path, a mapping or a config, with
    ``overrides`` (``"policy_train.lambda_reg=0.001"``) applied on top."""
    if isinstance(data, SearchConfig):
        base = data.to_dict()
    elif isinstance(data, (str, os.PathLike)):
        base = read_yaml(data)
        source = os.fspath(data)
    elif data is None:
        base = {}
    elif isinstance(data, Mapping):
        base = copy.deepcopy(dict(data))  # overrides go into nested sections: not the caller's
    else:
        raise ConfigError(f"a config is a YAML path, a mapping or a SearchConfig, got {type(data).__name__}")
    for text in overrides:
        apply_override(base, text)
    try:
        return _build(SearchConfig, base, "").check()
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def read_yaml(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = parse_yaml(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds a mapping of settings, got {type(data).__name__}")
    return data


def apply_override(data: Dict[str, Any], text: str) -> None:
    """Set ``a.b.c=value`` in the nested mapping ``data``; the value is parsed as YAML
    (``0.001``, ``true``, ``[1, 2]``, ``null``)."""
    if "=" not in text:
        raise ConfigError(f"an override is key.path=value (e.g. policy_train.lambda_reg=0.001), got {text!r}")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r} names no key")
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({exc})") from exc
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {text!r}: '{part}' is a value, not a group of settings")
        node = child
    node[parts[-1]] = value


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> Dict[str, Any]:
    """Recursive dict merge: values of ``update`` win, nested mappings merge."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# -- checks ------------------------------------------------------------------------------

def _one_of(value: Any, choices: Sequence[str], where: str) -> None:
    if value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(choices)}; got {value!r}{_did_you_mean(str(value), choices)}")


def _positive(value: Any, where: str) -> None:
    if not value > 0:
        raise ConfigError(f"{where} must be greater than 0, got {value!r}")


def _non_negative(value: Any, where: str) -> None:
    if not value >= 0:
        raise ConfigError(f"{where} must be 0 or more, got {value!r}")
