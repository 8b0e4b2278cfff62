"""What must hold for any input, however hostile: the checks the hypothesis tests and the
atheris targets run on every generated input.

Front-end contract:

* the only exceptions that come out are :class:`automtl.errors.AutoMTLError` subclasses, each
  with a message (no ``KeyError``, no torch ``RuntimeError``, no ``RecursionError``);
* a prototxt net that builds also runs: at its declared input, every node's output has the
  shape the front end computed statically;
* a compiled model computes what its backbone computes: the all-shared and the all-own
  policies give every task exactly the backbone's output;
* with every task's copies made distinct (tests/task_copies.py), the all-own model gives each
  task what the backbone loaded with that task's copies computes, and the derived model of a
  mixed policy computes what the SuperModel computes in fixed mode - so a task run on another
  task's copy, or on the shared operator, is a finding.

A violation raises :class:`Finding`. The forward and compile checks only run on nets small
enough to keep every input well under a second (``RUN_LIMITS``); bigger ones are still built,
which is where absurd sizes must be refused.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Tuple

import sys

import torch
import torch.fx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import automtl  # noqa: E402
from automtl import Policy  # noqa: E402
from automtl.compiler.fx_frontend import STATIC_SHAPE_KEY
from automtl.compiler.prototxt.build import build_graph_module
from automtl.compiler.prototxt.layers import is_supported
from automtl.compiler.prototxt.parse import parse_net
from automtl.compiler.prototxt.source import PrototxtSource
from automtl.errors import AutoMTLError

#: nets above these sizes are built but not run (parameters; values of all blobs together)
RUN_LIMITS = {"parameters": 2_000_000, "values": 3_000_000}

TASKS = ("a", "b")


class Finding(AssertionError):
    """An input broke the front-end contract (see the module docstring)."""


def guarded(what: str, fn: Callable[[], Any]) -> Tuple[Optional[Any], Optional[AutoMTLError]]:
    """``(result, None)``, or ``(None, error)`` for an automtl error with a message; any other
    exception (or an empty message) is a :class:`Finding`."""
    try:
        return fn(), None
    except AutoMTLError as exc:
        if not str(exc).strip():
            raise Finding(f"{what}: {type(exc).__name__} without a message") from exc
        return None, exc
    except Finding:
        raise
    except Exception as exc:  # the point: nothing else may escape
        raise Finding(f"{what}: {type(exc).__name__}: {str(exc)[:300]}") from exc


def build_prototxt(text: str, batch_size: Optional[int] = None) -> torch.fx.GraphModule:
    """:func:`automtl.compiler.prototxt.load_prototxt` on ``text`` as prototxt text (never as a
    path or a shipped name, whatever the text looks like)."""
    return build_graph_module(parse_net(PrototxtSource(text, "<fuzz input>"), is_supported), batch_size=batch_size)


def _cheap(gm: torch.fx.GraphModule, copies: int = 1) -> bool:
    params = sum(p.numel() for p in gm.parameters()) * copies
    values = 0
    for node in gm.graph.nodes:
        shape = node.meta.get(STATIC_SHAPE_KEY)
        if shape is not None:
            values += torch.Size(shape).numel()
    return params <= RUN_LIMITS["parameters"] and values <= RUN_LIMITS["values"]


class _ShapeCheck(torch.fx.Interpreter):
    def run_node(self, n: torch.fx.Node) -> Any:
        result = super().run_node(n)
        expected = n.meta.get(STATIC_SHAPE_KEY)
        if isinstance(result, torch.Tensor) and expected is not None and tuple(result.shape) != tuple(expected):
            raise Finding(
                f"node '{n.name}' computes shape {list(result.shape)}, the front end said {list(expected)}"
            )
        return result


def check_prototxt(text: str, run: bool = True, compile: bool = True) -> str:  # noqa: A002
    """Hold the contract on prototxt ``text``; returns what happened (``refused: <error>``,
    ``built``, ``ran``, ``compiled``)."""
    gm, error = guarded("building", lambda: build_prototxt(text))
    if error is not None:
        return f"refused: {type(error).__name__}"
    if not run or not _cheap(gm):
        return "built"
    gm.eval()
    x = torch.randn(*gm.input_shape)
    try:
        with torch.no_grad():
            _ShapeCheck(gm).run(x)
    except Finding:
        raise
    except ValueError as exc:
        if str(exc).startswith("Expected more than 1 value per channel"):
            return "built"  # a norm on batch statistics (no running ones) of a single value: torch's rule, not a front-end defect
        raise Finding(f"a net that built fails to run on its declared input {list(x.shape)}: ValueError: {str(exc)[:300]}") from exc
    except Exception as exc:
        raise Finding(f"a net that built fails to run on its declared input {list(x.shape)}: {type(exc).__name__}: {str(exc)[:300]}") from exc
    if not compile or not _cheap(gm, copies=1 + len(TASKS)):
        return "ran"
    torch.manual_seed(0)
    reference, error = guarded("building at batch 1", lambda: build_prototxt(text, batch_size=1))
    if error is not None:
        return f"refused at batch 1: {type(error).__name__}"  # e.g. it slices the batch axis
    torch.manual_seed(0)  # the same initial weights in the compiled model
    sm, error = guarded("compiling", lambda: automtl.compile(text, list(TASKS)))
    if error is not None:
        return f"refused by compile: {type(error).__name__}"
    check_equivalent(sm, reference.eval(), torch.randn(*reference.input_shape))
    return "compiled"


def _close(got: Any, expected: Any) -> bool:
    if isinstance(expected, torch.Tensor):
        return (
            isinstance(got, torch.Tensor)
            and got.shape == expected.shape
            and torch.allclose(got, expected, rtol=1e-4, atol=1e-5, equal_nan=True)
        )
    if isinstance(expected, (tuple, list)):
        return isinstance(got, (tuple, list)) and len(got) == len(expected) and all(_close(g, e) for g, e in zip(got, expected))
    return got == expected


def check_equivalent(sm: Any, backbone: torch.nn.Module, x: torch.Tensor) -> None:
    """The all-shared and the all-own models (derived, and the SuperModel in fixed mode) give
    every task the backbone's output on ``x`` (task heads are identities)."""
    sm.eval()
    with torch.no_grad():
        expected = backbone(x)
        for name in ("all_shared", "all_own"):
            policy = getattr(Policy, name)(sm)
            derived, error = guarded(f"deriving {name}", lambda: sm.derive(policy).eval())
            if error is not None:
                raise Finding(f"deriving the {name} policy of a compiled model failed: {error}")
            outputs: Dict[str, Any] = {"derived": derived(x)}
            sm.set_mode("fixed", policy=policy)
            outputs["supermodel"] = sm(x)
            if os.environ.get("FUZZ_FAST"):
                sm.set_execution("fast")
                outputs["fast-path supermodel"] = sm(x)
                sm.set_execution("auto")
            for where, out in outputs.items():
                for task in TASKS:
                    if not _close(out[task], expected):
                        raise Finding(f"the {name} {where} model's output for task '{task}' differs from the backbone's")
    check_distinct_copies(sm, backbone, x)


def check_distinct_copies(sm: Any, backbone: torch.nn.Module, x: torch.Tensor) -> None:
    """After every task's copies are made distinct (this changes ``sm``): the all-own model,
    derived and the SuperModel in fixed mode, gives each task the output of ``backbone``
    loaded with that task's copies, and a mixed policy's derived model computes what the
    SuperModel computes in fixed mode."""
    from task_copies import perturb_copies, task_backbone

    perturb_copies(sm, seed=1)
    sm.eval()
    with torch.no_grad():
        policies = {"all_own": Policy.all_own(sm), "random": Policy.random(sm, seed=0)}
        for name, policy in policies.items():
            derived, error = guarded(f"deriving {name}", lambda: sm.derive(policy).eval())
            if error is not None:
                raise Finding(f"deriving the {name} policy of a compiled model failed: {error}")
            outputs = {"derived": derived(x), "supermodel": sm.set_mode("fixed", policy=policy)(x)}
            for task in TASKS:
                if name == "all_own":
                    expected = task_backbone(sm, backbone, task).eval()(x)
                    for where, out in outputs.items():
                        if not _close(out[task], expected):
                            raise Finding(
                                f"the all_own {where} model's output for task '{task}' differs from the backbone "
                                "holding that task's copies"
                            )
                elif not _close(outputs["derived"][task], outputs["supermodel"][task]):
                    raise Finding(
                        f"a mixed policy's derived model and the SuperModel in fixed mode differ for task '{task}' "
                        "(distinct per-task copies)"
                    )


def check_cnn(spec: Dict[str, Any]) -> str:
    """Hold the contract on the random CNN ``spec`` (see :func:`netgen.cnn_spec`)."""
    from netgen import RandomCNN

    torch.manual_seed(0)
    net = RandomCNN(spec).eval()
    x = torch.randn(2, spec["channels"], spec["size"], spec["size"])
    sm, error = guarded("compiling", lambda: automtl.compile(net, list(TASKS), example_input=x))
    if error is not None:
        try:
            with torch.no_grad():
                net(x)
        except Exception:
            return "refused: does not run"  # the net itself is broken; compile said so clearly
        if "no searchable operators" in str(error):
            return "refused: nothing to search"
        if "has an empty" in str(error):
            return "refused: an empty tensor"  # it runs, on zero-size activations
        raise Finding(f"a net that runs was refused: {error}")
    check_equivalent(sm, net, x)
    return "compiled"
