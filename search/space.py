"""The NASNet search space as a fixed sequence of categorical decisions (Zoph et al., 2018, Sec. 3).

A cell has B blocks; the controller makes five decisions per block, in the paper's order
(Fig. 3): the first input, the second input, the op on the first, the op on the second, and how
to combine the two. Block ``b`` may read the two cell inputs or any earlier block (``2 + b``
choices). The normal cell's ``5B`` decisions come first, then the reduction cell's: ``2 x 5B`` in
all. The cell output concatenates every block output that no other block reads ("all of the
unused hidden states generated in the convolutional cell are concatenated", Sec. 3), so the
decisions determine the cell completely.

:meth:`SearchSpace.decode` and :meth:`SearchSpace.encode` are inverse bijections between
decision sequences and the genotypes of the space. Every sequence decodes to a valid genotype:
the last block is never read, so the output is never empty, and every block output is either read
or concatenated.

TF-slim's NASNet-A lists its concatenated states by hand and adds one state that a block also
reads (state 1 in the normal cell, state 3 in the reduction cell). Its blocks are a point of this
space; :meth:`SearchSpace.canonical` gives the member with the same blocks and the paper's rule.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nasnet_backbones.genotype import COMBINE_OPS, Block, CellSpec, Genotype, GenotypeError
from nasnet_backbones.ops import NASNET_SEARCH_OPS, OPS

__all__ = ["Decision", "SearchSpace", "SearchSpaceError", "CELLS", "DECISIONS_PER_BLOCK"]

CELLS = ("normal", "reduce")
DECISIONS_PER_BLOCK = 5  # input, input, op, op, combine


class SearchSpaceError(ValueError):
    """A search space that cannot be built, or a decision sequence / genotype outside the space."""


@dataclass(frozen=True)
class Decision:
    """One categorical choice the controller makes."""

    cell: str  # "normal" | "reduce"
    block: int
    kind: str  # "input" | "op" | "combine"
    side: int  # 0 or 1 for inputs and ops; 0 for the combine
    num_choices: int

    @property
    def label(self) -> str:
        side = "" if self.kind == "combine" else f"[{self.side}]"
        return f"{self.cell}.blocks[{self.block}].{self.kind}{side}"


@dataclass(frozen=True)
class SearchSpace:
    """``num_blocks`` blocks per cell over ``ops``, combined by one of ``combine_ops``.

    The defaults are the paper's space: B = 5, the 13 operations, combination by addition.
    """

    num_blocks: int = 5
    ops: tuple[str, ...] = NASNET_SEARCH_OPS
    combine_ops: tuple[str, ...] = ("add",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "combine_ops", tuple(self.combine_ops))
        if not isinstance(self.num_blocks, int) or self.num_blocks < 1:
            raise SearchSpaceError(f"num_blocks (B) must be a positive integer, got {self.num_blocks!r}")
        for what, names, known in (("op", self.ops, OPS), ("combine op", self.combine_ops, COMBINE_OPS)):
            if not names:
                raise SearchSpaceError(f"the search space needs at least one {what}")
            unknown = [n for n in names if n not in known]
            if unknown:
                raise SearchSpaceError(f"unknown {what}(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
            if len(set(names)) != len(names):
                raise SearchSpaceError(f"repeated {what} in {list(names)}")

    # -- the decision sequence -----------------------------------------------------------------

    def decisions(self) -> list[Decision]:
        """Every decision, in the order the controller makes them."""
        out = []
        for cell in CELLS:
            for b in range(self.num_blocks):
                out += [Decision(cell, b, "input", 0, 2 + b), Decision(cell, b, "input", 1, 2 + b),
                        Decision(cell, b, "op", 0, len(self.ops)), Decision(cell, b, "op", 1, len(self.ops)),
                        Decision(cell, b, "combine", 0, len(self.combine_ops))]
        return out

    @property
    def num_decisions(self) -> int:
        return 2 * DECISIONS_PER_BLOCK * self.num_blocks

    def num_choices(self) -> np.ndarray:
        return np.array([d.num_choices for d in self.decisions()], dtype=np.int64)

    def log10_size(self) -> float:
        """log10 of the number of distinct genotypes in the space."""
        return float(np.log10(self.num_choices().astype(np.float64)).sum())

    def check(self, decisions: Sequence[int]) -> list[int]:
        values = [int(v) for v in decisions]
        if len(values) != self.num_decisions:
            raise SearchSpaceError(f"expected {self.num_decisions} decisions (2 x 5 x B={self.num_blocks}), got {len(values)}")
        for value, d in zip(values, self.decisions()):
            if not 0 <= value < d.num_choices:
                raise SearchSpaceError(f"{d.label}: choice {value} out of range 0..{d.num_choices - 1}")
        return values

    # -- decisions <-> genotypes ---------------------------------------------------------------

    def _cell(self, values: Sequence[int]) -> CellSpec:
        blocks = []
        for b in range(self.num_blocks):
            i0, i1, o0, o1, c = values[DECISIONS_PER_BLOCK * b: DECISIONS_PER_BLOCK * (b + 1)]
            blocks.append(Block((i0, i1), (self.ops[o0], self.ops[o1]), self.combine_ops[c]))
        read = {i for block in blocks for i in block.inputs}
        concat = tuple(2 + b for b in range(self.num_blocks) if 2 + b not in read)
        return CellSpec(tuple(blocks), concat)

    def decode(self, decisions: Sequence[int], name: str = "", source: str = "") -> Genotype:
        values = self.check(decisions)
        half = self.num_decisions // 2
        return Genotype(self._cell(values[:half]), self._cell(values[half:]), name=name, source=source)

    def encode(self, genotype: Genotype) -> list[int]:
        """The decisions that produce ``genotype``'s blocks (its concat list is not a decision)."""
        try:
            genotype.check_num_blocks(self.num_blocks)
        except GenotypeError as exc:
            raise SearchSpaceError(f"genotype {genotype.name or genotype.hash()} is outside this space: {exc}") from None
        values = []
        for cell_name in CELLS:
            for b, block in enumerate(getattr(genotype, cell_name).blocks):
                at = f"{cell_name}.blocks[{b}]"
                for op in block.ops:
                    if op not in self.ops:
                        raise SearchSpaceError(f"{at}: op {op!r} is not in this search space ({', '.join(self.ops)})")
                if block.combine not in self.combine_ops:
                    raise SearchSpaceError(f"{at}: combine {block.combine!r} is not in this space ({', '.join(self.combine_ops)})")
                values += [*block.inputs, self.ops.index(block.ops[0]), self.ops.index(block.ops[1]),
                           self.combine_ops.index(block.combine)]
        return values

    def canonical(self, genotype: Genotype) -> Genotype:
        """The member of the space with ``genotype``'s blocks (concat by the paper's rule)."""
        return self.decode(self.encode(genotype), name=genotype.name, source=genotype.source)

    def contains(self, genotype: Genotype) -> bool:
        try:
            return self.canonical(genotype) == genotype
        except SearchSpaceError:
            return False

    # -- sampling and mutation -----------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> list[int]:
        """A uniformly random point of the space (each decision uniform, as the paper's random search)."""
        return [int(rng.integers(n)) for n in self.num_choices()]

    def mutate(self, decisions: Sequence[int], rng: np.random.Generator) -> list[int]:
        """Change one decision to another of its values (AmoebaNet's hidden-state / op mutation).

        Decisions with a single choice (block 0's inputs are never single; a one-op combine is) are
        never picked, so the result always differs from the parent.
        """
        values = self.check(decisions)
        choices = self.num_choices()
        mutable = np.flatnonzero(choices > 1)
        index = int(rng.choice(mutable))
        new = int(rng.integers(choices[index] - 1))
        values[index] = new if new < values[index] else new + 1
        return values

    # -- identity ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"num_blocks": self.num_blocks, "ops": list(self.ops), "combine_ops": list(self.combine_ops),
                "concat": "unused_block_outputs"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchSpace":
        return cls(int(data["num_blocks"]), tuple(data["ops"]), tuple(data["combine_ops"]))

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def describe(self) -> str:
        return (f"B={self.num_blocks}, {len(self.ops)} ops, combine {'/'.join(self.combine_ops)}: "
                f"{self.num_decisions} decisions, 10^{self.log10_size():.1f} cell pairs")
