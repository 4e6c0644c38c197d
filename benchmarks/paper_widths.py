"""Which base widths reproduce the paper's parameter and mult-add counts for the NASNet-A rows
whose F column does not (Zoph et al., 2018, Tables 1 and 2).

    .venv/bin/python benchmarks/paper_widths.py

For each row: the width the paper's F implies (F / 24), the width we register, and the
neighbours and other layouts that were considered. Counts as in the registry tests: parameters
without the auxiliary head, mult-adds of convs and linear layers (fvcore) at the row's input size.
"""

from __future__ import annotations

import logging

import nasnet_backbones as nb
from nasnet_backbones.complexity import count_madds, count_params

# (row, paper params M, paper mult-adds M or None, input size, stem, [(N, width, note), ...])
ROWS = [
    ("5 @ 1538", 10.9, 2350, 299, "imagenet", [(5, 64, "F/24 rounded"), (5, 60, "registered"), (5, 61, "")]),
    ("7 @ 1920", 22.6, 4930, 299, "imagenet", [(7, 80, "F/24"), (7, 76, "registered"), (7, 77, ""),
                                                (5, 89, "other N"), (6, 82, "other N"), (8, 72, "other N")]),
    ("CIFAR 7 @ 2304", 27.6, None, 32, "cifar", [(7, 96, "F/24"), (7, 88, "registered")]),
]


def main() -> None:
    logging.disable(logging.WARNING)
    print("| row | N | width | params (M) | vs paper | mult-adds (M) | vs paper | note |")
    print("|---|---|---|---|---|---|---|---|")
    for row, p_params, p_madds, size, stem, candidates in ROWS:
        for n, width, note in candidates:
            extra = dict(stem_multiplier=3.0, skip_reduction_layer_input=True) if stem == "imagenet" else {}
            model = nb.build_model(nb.genotypes.NASNET_A, cells=n, filters=width, stem=stem,
                                   num_classes=1000 if stem == "imagenet" else 10, img_size=size, **extra)
            params = count_params(model) / 1e6
            madds = count_madds(model, size) / 1e6 if p_madds else None
            madds_cols = f"{madds:.0f} | {madds / p_madds - 1:+.1%}" if madds else "– | –"
            print(f"| {row} | {n} | {width} | {params:.3f} | {params / p_params - 1:+.1%} | {madds_cols} | {note} |")


if __name__ == "__main__":
    main()
