"""Cell diagrams in the style of the paper's Fig. 4: inputs on the left, each block's two ops and
their combination, and the concatenated output on the right.

Blocks are placed in columns by depth (a block reading another block's output sits to its
right), so the order in which information flows reads left to right. ``nasnet draw cell.json
-o cell.png`` draws any genotype; the format follows the suffix (png, svg, pdf). Drawing needs matplotlib,
which comes with the ``tools`` extra (``pip install 'nasnet-backbones[tools]'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from .atomic import refuse_own_input, write_atomic
from .errors import missing_dependency
from .genotype import CellSpec, Genotype

__all__ = ["draw_cell", "draw_genotype", "add_parser", "run"]

_OP_COLOURS = (  # (name prefix, face colour)
    ("sep_conv", "#f6c667"),
    ("dil_sep", "#f6c667"),
    ("conv", "#f59e80"),
    ("dil_conv", "#f59e80"),
    ("avg_pool", "#9ecae1"),
    ("max_pool", "#9ecae1"),
    ("identity", "#d9d9d9"),
    ("skip", "#d9d9d9"),
)
_INPUT_NAMES = ("h[i]", "h[i-1]")


def _op_colour(name: str) -> str:
    return next((colour for prefix, colour in _OP_COLOURS if name.startswith(prefix)), "#e5e5e5")


def _layout(spec: CellSpec) -> tuple[dict[int, tuple[float, float]], list[tuple[float, float]], float]:
    """Positions of each state (inputs and block outputs), of each block's op pair, and the output x."""
    depth = {0: 0, 1: 0}
    for b, block in enumerate(spec.blocks):
        depth[2 + b] = 1 + max(depth[i] for i in block.inputs)
    columns: dict[int, list[int]] = {}
    for b in range(len(spec.blocks)):
        columns.setdefault(depth[2 + b], []).append(2 + b)
    tallest = max(len(states) for states in columns.values())
    pos: dict[int, tuple[float, float]] = {}
    for d, states in columns.items():
        for k, state in enumerate(states):
            pos[state] = (2.0 * d, (len(states) - 1) / 2 - k)  # centred on y = 0
    spread = max(1.0, (tallest - 1) / 2)
    pos[0], pos[1] = (0.0, spread / 2 + 0.25), (0.0, -spread / 2 - 0.25)
    ops = [(pos[2 + b][0] - 1.0, pos[2 + b][1]) for b in range(len(spec.blocks))]
    return pos, ops, 2.0 * max(depth.values()) + 1.5


def draw_cell(spec: CellSpec, ax: Any, title: str = "") -> None:
    """Draw one cell on a matplotlib axes."""
    pos, op_pos, out_x = _layout(spec)

    def node(x: float, y: float, text: str, face: str, shape: str = "round,pad=0.3") -> None:
        ax.text(x, y, text, ha="center", va="center", fontsize=8, zorder=3,
                bbox=dict(boxstyle=shape, facecolor=face, edgecolor="#444444", linewidth=0.8))

    def arrow(a: tuple[float, float], b: tuple[float, float], shrink_a: float = 14, shrink_b: float = 14) -> None:
        ax.annotate("", xy=b, xytext=a, zorder=1,
                    arrowprops=dict(arrowstyle="-|>", color="#555555", lw=0.8, shrinkA=shrink_a, shrinkB=shrink_b))

    for i, name in enumerate(_INPUT_NAMES):
        node(*pos[i], name, "#ffffff", "square,pad=0.35")
    out_y = 0.0
    for b, block in enumerate(spec.blocks):
        x, y = op_pos[b]
        for side, (op, src) in enumerate(zip(block.ops, block.inputs)):
            oy = y + (0.22 if side == 0 else -0.22)
            node(x, oy, op, _op_colour(op), "round,pad=0.2")
            arrow(pos[src], (x - 0.42, oy), shrink_b=1)  # to the box's left edge
            arrow((x + 0.42, oy), pos[2 + b], shrink_a=1)
        node(*pos[2 + b], f"{'+' if block.combine == 'add' else 'cat'}\n{b}", "#b5e7a0", "circle,pad=0.25")
    node(out_x, out_y, "concat", "#c6b3e6", "square,pad=0.35")
    for state in spec.concat:
        arrow(pos[state], (out_x, out_y))
    xs = [p[0] for p in pos.values()] + [out_x]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.9, max(ys) + 0.9)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)


def draw_genotype(genotype: Genotype, path: str | Path, cells: Sequence[str] = ("normal", "reduce")) -> Path:
    """Draw the given cells of ``genotype`` side by side into ``path`` (format from the suffix)."""
    try:
        import matplotlib
    except ImportError as exc:  # an extra, not a base dependency
        raise missing_dependency(exc, extra="tools", needed_for="drawing cells") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unknown = [c for c in cells if c not in ("normal", "reduce")]
    if unknown or not cells:
        raise ValueError(f"cells must be 'normal' and/or 'reduce', got {list(cells)}")
    specs = [(c, getattr(genotype, c)) for c in cells]
    width = sum(2.5 + 1.8 * _layout(s)[2] / 2 for _, s in specs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context({"svg.fonttype": "none"}):  # SVG text stays text: searchable and editable
        fig, axes = plt.subplots(1, len(specs), figsize=(min(24.0, width), 3.6 + 0.3 * genotype.num_blocks),
                                 squeeze=False)
        name = genotype.name or genotype.hash()
        for ax, (cell_name, spec) in zip(axes[0], specs):
            draw_cell(spec, ax, f"{name}: {'normal' if cell_name == 'normal' else 'reduction'} cell")
        fig.tight_layout()
        try:  # a failed or interrupted save leaves the previous file, not half a picture
            write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=150, format=path.suffix.lstrip(".").lower()))
        finally:
            plt.close(fig)
    return path


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("draw", help="draw a genotype's cells (PNG, SVG or PDF)",
                              description="Draw the normal and reduction cells of a genotype JSON file, or of a "
                              "published cell by name (nasnet_a, pnasnet_5, amoebanet_a, darts_v2).")
    p.add_argument("genotype", help="genotype JSON file (Genotype.to_json, best_genotype.json) or a published name")
    p.add_argument("-o", "--output", required=True, help="output image; the format follows the suffix")
    p.add_argument("--cell", choices=("both", "normal", "reduce"), default="both")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .genotypes import GENOTYPES

    genotype = GENOTYPES[args.genotype] if args.genotype in GENOTYPES else Genotype.from_json(args.genotype)
    suffix = Path(args.output).suffix.lower()
    if suffix not in (".png", ".svg", ".pdf"):
        raise ValueError(f"cannot tell the image format of {args.output}; use a .png, .svg or .pdf name")
    if Path(args.output).is_dir():
        raise ValueError(f"-o {args.output} is a directory; name the image file to write, e.g. {args.output}/cell.png")
    refuse_own_input(args.output, "-o/--output", {"genotype": None if args.genotype in GENOTYPES else args.genotype})
    cells = ("normal", "reduce") if args.cell == "both" else (args.cell,)
    print(draw_genotype(genotype, args.output, cells))
    return 0
