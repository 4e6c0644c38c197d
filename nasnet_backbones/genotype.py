"""Genotypes: a NASNet-style cell pair as validated, hashable data.

A NASNet cell (Zoph et al., 2018, Sec. 3) is B blocks. Each block picks two hidden states, applies
one op to each and combines the two results. The hidden states a cell can read are numbered the
way TF-slim's ``nasnet_utils.NasNetABaseCell`` numbers them:

* ``0``: this cell's input (the previous cell's output) after a ReLU-1x1 conv-BN,
* ``1``: the cell before that, resized to match (``prev_layer`` in TF-slim),
* ``2 + i``: the output of block ``i``.

The cell output concatenates the states listed in ``concat``. TF-slim spells that list out by hand
(``used_hiddenstates``); NASNet-A's normal cell, for instance, concatenates state 1 although
blocks use it. We keep it explicit so every published cell is representable.

A :class:`Genotype` is a normal cell and a reduction cell. It is frozen, validated at construction
(so a malformed file fails where it is read, with the field and block named), round-trips through
JSON with a schema version, and has a stable content hash for deduplication during search.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .atomic import write_atomic
from .jsonfile import parse_json, read_json

__all__ = ["Block", "CellSpec", "Genotype", "GenotypeError", "COMBINE_OPS", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
COMBINE_OPS = ("add", "concat")


class GenotypeError(ValueError):
    """A genotype that cannot describe a network; the message names the field and block."""


def _known_ops() -> frozenset[str]:
    # Imported lazily: ops.py imports torch, and a genotype is plain data.
    from .ops import OPS

    return frozenset(OPS)


@dataclass(frozen=True)
class Block:
    """One block: ``combine(ops[0](state[inputs[0]]), ops[1](state[inputs[1]]))``."""

    inputs: tuple[int, int]
    ops: tuple[str, str]
    combine: str = "add"

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "ops", tuple(self.ops))


@dataclass(frozen=True)
class CellSpec:
    """A cell: its blocks and the hidden states concatenated into its output."""

    blocks: tuple[Block, ...]
    concat: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        object.__setattr__(self, "concat", tuple(self.concat))

    @property
    def num_states(self) -> int:
        return 2 + len(self.blocks)

    def validate(self, where: str, known_ops: frozenset[str] | None = None) -> None:
        known_ops = _known_ops() if known_ops is None else known_ops
        if not self.blocks:
            raise GenotypeError(f"{where}: the cell has no blocks; a cell needs at least one block")
        for b, block in enumerate(self.blocks):
            at = f"{where}.blocks[{b}]"
            if len(block.inputs) != 2 or len(block.ops) != 2:
                raise GenotypeError(
                    f"{at}: a block takes exactly two inputs and two ops, got inputs={list(block.inputs)} "
                    f"ops={list(block.ops)}"
                )
            for side, (op, idx) in enumerate(zip(block.ops, block.inputs)):
                if not isinstance(op, str) or op not in known_ops:
                    raise GenotypeError(
                        f"{at}.ops[{side}]: unknown op {op!r}; known ops: {', '.join(sorted(known_ops))}"
                    )
                if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < 2 + b:
                    raise GenotypeError(
                        f"{at}.inputs[{side}]: input index {idx!r} out of range; block {b} may read "
                        f"states 0..{1 + b} (0: cell input, 1: previous cell, 2+i: block i)"
                    )
            if block.combine not in COMBINE_OPS:
                raise GenotypeError(f"{at}.combine: unknown combine op {block.combine!r}; use one of {COMBINE_OPS}")
        if not self.concat:
            raise GenotypeError(f"{where}.concat: empty; list the hidden states that form the cell output")
        for idx in self.concat:
            if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < self.num_states:
                raise GenotypeError(
                    f"{where}.concat: state {idx!r} out of range 0..{self.num_states - 1}"
                )
        if len(set(self.concat)) != len(self.concat):
            raise GenotypeError(f"{where}.concat: repeated state in {list(self.concat)}")
        read = {i for block in self.blocks for i in block.inputs} | set(self.concat)
        for b in range(len(self.blocks)):
            if 2 + b not in read:
                raise GenotypeError(
                    f"{where}.blocks[{b}]: its output (state {2 + b}) is neither read by a later block "
                    f"nor concatenated, so it would be computed for nothing"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "blocks": [
                {"inputs": list(b.inputs), "ops": list(b.ops), "combine": b.combine} for b in self.blocks
            ],
            "concat": list(self.concat),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "CellSpec":
        if not isinstance(data, dict):
            raise GenotypeError(f"{where}: expected an object with 'blocks' and 'concat', got {type(data).__name__}")
        for key in ("blocks", "concat"):
            if key not in data:
                raise GenotypeError(f"{where}: missing field {key!r}")
        if not isinstance(data["blocks"], list):
            raise GenotypeError(f"{where}.blocks: expected a list of blocks")
        blocks = []
        for b, raw in enumerate(data["blocks"]):
            at = f"{where}.blocks[{b}]"
            if not isinstance(raw, dict) or "inputs" not in raw or "ops" not in raw:
                raise GenotypeError(f"{at}: expected an object with 'inputs' and 'ops' (and optional 'combine')")
            if not isinstance(raw["inputs"], list) or not isinstance(raw["ops"], list):
                raise GenotypeError(f"{at}: 'inputs' and 'ops' must be lists of two entries")
            blocks.append(Block(tuple(raw["inputs"]), tuple(raw["ops"]), raw.get("combine", "add")))
        if not isinstance(data["concat"], list):
            raise GenotypeError(f"{where}.concat: expected a list of state indices")
        return cls(tuple(blocks), tuple(data["concat"]))

    @classmethod
    def from_pairs(
        cls, ops: Sequence[str], inputs: Sequence[int], concat: Iterable[int], combine: str = "add"
    ) -> "CellSpec":
        """Build from TF-slim's flat lists (``operations``, ``hiddenstate_indices``)."""
        if len(ops) != len(inputs) or len(ops) % 2:
            raise GenotypeError(
                f"ops ({len(ops)}) and inputs ({len(inputs)}) must have the same, even length"
            )
        blocks = tuple(
            Block((inputs[i], inputs[i + 1]), (ops[i], ops[i + 1]), combine) for i in range(0, len(ops), 2)
        )
        return cls(blocks, tuple(concat))


@dataclass(frozen=True)
class Genotype:
    """A normal cell and a reduction cell, validated at construction."""

    normal: CellSpec
    reduce: CellSpec
    name: str = ""
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        known = _known_ops()
        self.normal.validate("normal", known)
        self.reduce.validate("reduce", known)

    @property
    def num_blocks(self) -> int:
        return len(self.normal.blocks)

    def check_num_blocks(self, expected: int) -> None:
        """Fail unless both cells have ``expected`` blocks (a search space's B)."""
        for cell_name, cell in (("normal", self.normal), ("reduce", self.reduce)):
            if len(cell.blocks) != expected:
                raise GenotypeError(
                    f"{cell_name}: expected {expected} blocks (B), got {len(cell.blocks)}"
                )

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "source": self.source,
            "normal": self.normal.to_dict(),
            "reduce": self.reduce.to_dict(),
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """Return the JSON text; also write it to ``path`` when one is given."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            write_atomic(path, lambda tmp: tmp.write_text(text))  # never leave a half-written genotype behind
        return text

    @classmethod
    def from_dict(cls, data: Any) -> "Genotype":
        if not isinstance(data, dict):
            raise GenotypeError(f"a genotype is a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise GenotypeError(
                f"schema_version: expected {SCHEMA_VERSION}, got {version!r}; "
                "this file was written by another version of nasnet-backbones or by hand"
            )
        for key in ("normal", "reduce"):
            if key not in data:
                raise GenotypeError(f"missing field {key!r}; a genotype has a 'normal' and a 'reduce' cell")
        return cls(
            normal=CellSpec.from_dict(data["normal"], "normal"),
            reduce=CellSpec.from_dict(data["reduce"], "reduce"),
            name=str(data.get("name", "")),
            source=str(data.get("source", "")),
        )

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> "Genotype":
        """Read a genotype from a JSON file (or from JSON text starting with ``{``)."""
        what = "a genotype JSON file"
        if isinstance(path_or_text, str) and path_or_text.lstrip().startswith("{"):
            origin = "<text>"
            data = parse_json(path_or_text, origin=origin, what=what, error=GenotypeError)
        else:
            path = Path(path_or_text)
            if not path.is_file():
                raise FileNotFoundError(f"genotype file not found: {path}")
            origin = str(path)
            data = read_json(path, what=what, error=GenotypeError)
        try:
            return cls.from_dict(data)
        except GenotypeError as exc:
            raise GenotypeError(f"{origin}: {exc}") from None

    @classmethod
    def from_darts(
        cls,
        normal: Sequence[tuple[str, int]],
        normal_concat: Iterable[int],
        reduce: Sequence[tuple[str, int]],
        reduce_concat: Iterable[int],
        name: str = "",
        source: str = "",
    ) -> "Genotype":
        """Convert a DARTS-style genotype (``[(op, input), ...]`` pairs, two per block).

        DARTS numbers the cell inputs the other way round (0 = the cell two back, 1 = the previous
        cell) and names its ops differently (``skip_connect``, separable ``dil_conv_3x3``), so both
        are translated here.
        """
        renames = {"dil_conv_3x3": "dil_sep_conv_3x3", "dil_conv_5x5": "dil_sep_conv_5x5"}

        def swap(i: int) -> int:
            return {0: 1, 1: 0}.get(i, i)

        def cell(pairs: Sequence[tuple[str, int]], concat: Iterable[int]) -> CellSpec:
            ops = [renames.get(op, op) for op, _ in pairs]
            inputs = [swap(i) for _, i in pairs]
            return CellSpec.from_pairs(ops, inputs, [swap(i) for i in concat])

        return cls(cell(normal, normal_concat), cell(reduce, reduce_concat), name=name, source=source)

    # -- identity ------------------------------------------------------------------------------

    def hash(self) -> str:
        """Stable content hash of the two cells (name and source excluded), for deduplication."""
        canonical = json.dumps({"normal": self.normal.to_dict(), "reduce": self.reduce.to_dict()}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def __str__(self) -> str:
        def fmt(cell: CellSpec) -> str:
            blocks = "; ".join(
                f"{b.ops[0]}({b.inputs[0]}) {'+' if b.combine == 'add' else '||'} {b.ops[1]}({b.inputs[1]})"
                for b in cell.blocks
            )
            return f"[{blocks}] -> concat{list(cell.concat)}"

        return f"Genotype {self.name or self.hash()}\n  normal: {fmt(self.normal)}\n  reduce: {fmt(self.reduce)}"
