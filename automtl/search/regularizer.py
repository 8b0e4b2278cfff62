"""AutoMTL's policy regulariser, which pushes tasks to share operators - most at the bottom.

    L_reg = Σᵢ Σₗ (L − l)/L · [softplus(p′ᵢₗ(own) − p′ᵢₗ(shared)) + softplus(p′ᵢₗ(skip) − p′ᵢₗ(shared))]

over tasks i and searchable nodes l, where p′ is the soft policy (the softmax of the policy
logits), l the node's depth and L the number of searchable nodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from automtl.supermodel import SuperModel


def depth_weights(sm: "SuperModel") -> Dict[str, float]:
    """``{node: (L - l) / L}``: 1 for the first searchable node, shrinking with depth."""
    total = len(sm.searchable_nodes)
    return {node: (total - sm.depth(node)) / total for node in sm.searchable_nodes}


def policy_regularizer(sm: "SuperModel") -> torch.Tensor:
    """L_reg of ``sm``'s current policy logits, differentiable with respect to them."""
    probs = sm.policy_probs(grad=True)
    weights = depth_weights(sm)
    total = None
    for node, p in probs.items():  # p: [tasks, 3] over (shared, own, skip)
        term = F.softplus(p[:, 1] - p[:, 0]) + F.softplus(p[:, 2] - p[:, 0])
        term = weights[node] * term.sum()
        total = term if total is None else total + term
    assert total is not None  # a SuperModel always has searchable nodes
    return total
