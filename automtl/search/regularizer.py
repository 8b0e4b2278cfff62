"""AutoMTL's policy regulariser (Eq. 2 of the paper), which pushes tasks to share operators -
most at the bottom of the network:

    L_reg = Σᵢ Σₗ (L − l)/L · [softplus(P′ᵢₗ(1) − P′ᵢₗ(0)) + softplus(P′ᵢₗ(2) − P′ᵢₗ(0))]

over tasks i and searchable nodes l, with options 0 shared, 1 own copy, 2 skip.

* P′ is the soft policy of Eq. 1: the Gumbel-softmax of the policy logits at temperature τ,
  P′(k) = exp((G_k + log π_k)/τ) / Σ_j exp((G_j + log π_j)/τ), G_k ~ Gumbel(0, 1) - noise and
  temperature included, not the plain softmax of the logits. The regulariser uses the P′ the
  SuperModel's last forward pass mixed its options with (same noise, same τ): the policy step
  calls it right after that pass, so the regulariser and the task losses see one sample.
* l is a node's depth (:meth:`compiler.ir.IRGraph.compute_depths`: the number of searchable
  nodes on the longest path from the input before it, 0 for the first) and L the maximum depth
  over the searchable nodes, so the first node weighs (L − 0)/L = 1 and the deepest
  (L − L)/L = 0 (the paper numbers from 1 and has the deepest at l = L, weight 0; its official
  code weighs ``(max_depth - depth) / max_depth`` with 0-based depths, as here). A network whose
  searchable nodes all sit at depth 0 (L = 0) weighs them all 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict

import torch
import torch.nn.functional as F

from automtl.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from automtl.supermodel import SuperModel


def depth_weights(sm: "SuperModel") -> Dict[str, float]:
    """``{node: (L - l) / L}``, l the node's 0-based depth and L the maximum depth: 1 for the
    first searchable node, 0 for the deepest (all 1 when every node is at depth 0)."""
    depths = {node: sm.depth(node) for node in sm.searchable_nodes}
    deepest = max(depths.values())
    if deepest == 0:
        return {node: 1.0 for node in depths}
    return {node: (deepest - depth) / deepest for node, depth in depths.items()}


def _relative(counts: Dict[str, int]) -> Dict[str, float]:
    """``{node: count / mean(count)}`` (all 1 when every count is 0): weights that average 1, so
    that L_reg keeps the scale the depth weights give it and λ_reg means about the same."""
    mean = sum(counts.values()) / len(counts)
    if mean == 0:
        return {node: 1.0 for node in counts}
    return {node: count / mean for node, count in counts.items()}


def _node_parameters(sm: "SuperModel") -> Dict[str, int]:
    return {node: sum(p.numel() for p in sm.vcns[node].op.parameters()) for node in sm.searchable_nodes}


def _node_macs(sm: "SuperModel") -> Dict[str, int]:
    """The MACs of each searchable node's operator at the shapes ``sm`` was compiled with."""
    from automtl.export.cost import operator_macs

    macs = {}
    for node in sm.searchable_nodes:
        ir = sm.graph[node]
        macs[node] = operator_macs(sm.vcns[node].op, ir.in_shapes[0] if ir.in_shapes else None, ir.out_shape)
    return macs


def parameter_weights(sm: "SuperModel") -> Dict[str, float]:
    """``{node: n_l / mean(n)}``, n_l the parameters of a node's shared operator: an option
    (``policy_train.reg_weights: params``, not the paper's) that pushes sharing where the
    parameters are, whatever the depth; the weights average 1, as the terms' count stays."""
    return _relative(_node_parameters(sm))


def cost_weights(sm: "SuperModel") -> Dict[str, float]:
    """``{node: (n_l / mean(n) + m_l / mean(m)) / 2}``, n_l and m_l a node's parameters and MACs:
    an option (``policy_train.reg_weights: cost``, not the paper's) that pushes sharing where
    sharing saves memory or compute - the early convolutions hold the MACs of a small CNN, its
    last layers the parameters. The weights average 1."""
    params, macs = _relative(_node_parameters(sm)), _relative(_node_macs(sm))
    return {node: (params[node] + macs[node]) / 2 for node in sm.searchable_nodes}


#: ``policy_train.reg_weights`` -> the per-node weights of L_reg
REG_WEIGHTS = {"depth": depth_weights, "params": parameter_weights, "cost": cost_weights}


def _forward_weights(sm: "SuperModel"):  # type: ignore[no-untyped-def]
    """The soft Gumbel-softmax weights of ``sm``'s last forward pass, or None where there are
    none to reuse (no pass in gumbel mode yet, or straight-through ``hard`` samples, whose
    recorded weights are one-hot)."""
    weights = sm.last_weights
    if sm.mode != "gumbel" or sm.hard_gumbel or not isinstance(weights, dict):
        return None
    expected = (sm.num_tasks, 3)
    for node in sm.searchable_nodes:
        w = weights.get(node)
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != expected:
            return None
    return weights


def soft_policy(sm: "SuperModel") -> Dict[str, torch.Tensor]:
    """``{node: [tasks, 3]}``: P′ of Eq. 1, differentiable with respect to the policy logits.

    In gumbel mode (soft samples) it is the P′ of ``sm``'s last forward pass: with the noise
    G that pass drew, P′ = softmax((z + G)/τ) for logits z (disallowed options at −inf), and
    since log P′ = (z + G)/τ − c per row, softmax(log P′ + (z − z̄)/τ) with z̄ = z detached has
    the same value and the same gradient ∂P′/∂z, without the noise having to be stored. It
    assumes the logits and ``sm.tau`` have not changed since that pass (the policy step calls
    the regulariser right after its forward pass). Without such a pass (another mode, or
    ``hard`` straight-through samples, whose recorded weights are one-hot) it draws fresh
    Gumbel noise at ``sm.tau``: the same P′ in distribution, not the same sample.
    """
    recorded = _forward_weights(sm)
    probs: Dict[str, torch.Tensor] = {}
    for node in sm.searchable_nodes:
        logits = sm.vcns[node].logits
        if recorded is None:
            probs[node] = F.gumbel_softmax(sm._masked_logits(logits), tau=sm.tau, hard=False, dim=-1)
            continue
        used = recorded[node].to(device=logits.device, dtype=torch.float32)
        # log 0 = -inf for a disallowed (or underflowed) option: softmax gives it 0 and no gradient
        shift = (logits - logits.detach()).float() / sm.tau
        probs[node] = F.softmax(torch.log(used) + shift, dim=-1).to(logits.dtype)
    return probs


def policy_regularizer(sm: "SuperModel", weights: str = "depth") -> torch.Tensor:
    """L_reg (Eq. 2) of ``sm``'s soft policy P′ (:func:`soft_policy`), differentiable with
    respect to the policy logits. ``weights``: ``"depth"`` ((L − l)/L, the paper's) or
    ``"params"`` (:func:`parameter_weights`) or ``"cost"`` (:func:`cost_weights`)."""
    if weights not in REG_WEIGHTS:
        raise ConfigError(f"unknown regulariser weights {weights!r}; use {', '.join(REG_WEIGHTS)}")
    weights_of = REG_WEIGHTS[weights](sm)
    total = None
    for node, p in soft_policy(sm).items():  # p: [tasks, 3] over (shared, own, skip)
        term = F.softplus(p[:, 1] - p[:, 0]) + F.softplus(p[:, 2] - p[:, 0])
        term = weights_of[node] * term.sum()
        total = term if total is None else total + term
    assert total is not None  # a SuperModel always has searchable nodes
    return total
