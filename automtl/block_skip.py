"""Block skips: a task skips a whole residual block, as AdaShare (Sun et al., 2020) does.

A :class:`BlockSkip` names a residual block of the IR graph: its ``branch`` (the residual
branch's nodes, the addition that merges it with the shortcut and the activation right after
the addition, in program order), the node ``end`` whose value is the block's output, and the
node ``shortcut`` whose value the addition adds: the block's input for an identity shortcut,
or the output of the block's own down-sample path (ResNet's strided 1x1 convolution and its
norm) where the block changes the shape. A task that skips the block gets ``shortcut``'s value
as the block's output - ``x``, not ``relu(norm(skip(x)) + x)`` - and runs none of the branch.

Whether a task skips a block is read from a hard policy: the block is skipped when every one of
its ``members`` (the searchable nodes of the branch) is ``skip``; a policy that skips some and
not others is an error. In the soft modes the members run shared and the block's output is
``(w_shared + w_own) * block(x) + w_skip * shortcut`` with the weights of the block's first
member (the members' logits are one tensor, so this is one draw per block and task).

Blocks are found on the graph by :func:`automtl.methods.blocks.find_block_skips`; the SuperModel
and :func:`automtl.export.derive.derive` run them (``sm.set_block_skips``). This module sits
below both and imports neither.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from automtl.compiler.ir import OPTIONS, SKIP
from automtl.errors import PolicyError


@dataclasses.dataclass(frozen=True)
class BlockSkip:
    """One skippable residual block (see the module docstring)."""

    merge: str
    end: str
    shortcut: str
    branch: Tuple[str, ...]
    members: Tuple[str, ...]

    @property
    def name(self) -> str:
        return f"block@{self.merge}"


class BlockSkipPlan:
    """The block skips of a SuperModel, indexed for its forward pass and for derivation."""

    def __init__(self, blocks: Sequence[BlockSkip]):
        self.blocks: Tuple[BlockSkip, ...] = tuple(blocks)
        self.by_end: Dict[str, BlockSkip] = {b.end: b for b in self.blocks}
        self.block_of: Dict[str, BlockSkip] = {n: b for b in self.blocks for n in b.branch}

    def __bool__(self) -> bool:
        return bool(self.blocks)

    def skipped(self, hard: Mapping[str, Sequence[int]], tasks: Sequence[str]) -> Dict[str, List[bool]]:
        """``{block name: [task skips it?]}`` under the hard choices ``hard``."""
        out: Dict[str, List[bool]] = {}
        for block in self.blocks:
            row = []
            for t, task in enumerate(tasks):
                choices = {int(hard[m][t]) for m in block.members}
                if SKIP in choices and len(choices) > 1:
                    named = ", ".join(f"{m}={OPTIONS[int(hard[m][t])]}" for m in block.members)
                    raise PolicyError(
                        f"task '{task}' skips part of residual block {block.name} ({named}); a block is "
                        "skipped as a whole: give all its operators 'skip', or none"
                    )
                row.append(SKIP in choices)
            out[block.name] = row
        return out

    def idle(self, skipped: Mapping[str, Sequence[bool]]) -> Dict[str, List[bool]]:
        """``{branch node: [task does not run it?]}`` for the nodes of skipped blocks."""
        return {n: list(skipped[b.name]) for n, b in self.block_of.items() if any(skipped[b.name])}

    def soften(self, soft: Mapping[str, Any], count: int) -> Dict[str, Any]:
        """The option weights a soft pass runs the nodes with: the members of every block
        shared (the block's own weights mix its output with the shortcut at ``end``)."""
        shared = [1.0 if i == 0 else 0.0 for i in range(len(OPTIONS))]
        out = dict(soft)
        for block in self.blocks:
            for m in block.members:
                out[m] = [shared] * count
        return out

    def output(
        self,
        end: str,
        values: Sequence[Any],
        shortcut: Sequence[Any],
        skipped: Optional[Mapping[str, Sequence[bool]]] = None,
        soft: Optional[Mapping[str, Any]] = None,
    ) -> List[Any]:
        """The block's output per task: the shortcut's value where the task skips the block
        (hard), or the block's weights' mix of the two (``soft``: the weights as drawn)."""
        block = self.by_end[end]
        if skipped is not None:
            return [s if skip else v for v, s, skip in zip(values, shortcut, skipped[block.name])]
        weights = soft[block.members[0]]  # type: ignore[index]
        return [(w[0] + w[1]) * v + w[SKIP] * s for v, s, w in zip(values, shortcut, weights)]

    def extra_reads(self) -> Dict[str, str]:
        """``{end: shortcut}``: the end of a block reads its shortcut (for memory planning)."""
        return {b.end: b.shortcut for b in self.blocks}
