"""Published cells in one representation, each transcribed from its primary source.

State indices follow TF-slim (0: this cell's input, 1: the cell before, 2+i: block i); see
:mod:`nasnet_backbones.genotype`. Concatenated states are the ones TF marks unused
(``used_hiddenstates == 0``).

NASNet-B and NASNet-C (Zoph et al., 2018, appendix figures) are not here: no primary source
publishes their cells as code, and transcribing figures is how wrong cells spread.
"""

from __future__ import annotations

from .genotype import CellSpec, Genotype
from .ops import TF_OP_NAMES

__all__ = ["NASNET_A", "PNASNET_5", "AMOEBANET_A", "DARTS_V2", "GENOTYPES", "from_tf_slim"]


def from_tf_slim(operations: list[str], hiddenstate_indices: list[int], used_hiddenstates: list[int]) -> CellSpec:
    """A cell from TF's three lists (``nasnet_utils.NasNetABaseCell`` arguments)."""
    ops = [TF_OP_NAMES[op] for op in operations]
    concat = [i for i, used in enumerate(used_hiddenstates) if not used]
    return CellSpec.from_pairs(ops, hiddenstate_indices, concat)


NASNET_A = Genotype(
    name="NASNet-A",
    source="tensorflow/models research/slim/nets/nasnet/nasnet.py: NasNetANormalCell, NasNetAReductionCell",
    normal=from_tf_slim(
        ["separable_5x5_2", "separable_3x3_2", "separable_5x5_2", "separable_3x3_2", "avg_pool_3x3",
         "none", "avg_pool_3x3", "avg_pool_3x3", "separable_3x3_2", "none"],
        [0, 1, 1, 1, 0, 1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0, 0, 0],
    ),
    reduce=from_tf_slim(
        ["separable_5x5_2", "separable_7x7_2", "max_pool_3x3", "separable_7x7_2", "avg_pool_3x3",
         "separable_5x5_2", "none", "avg_pool_3x3", "separable_3x3_2", "max_pool_3x3"],
        [0, 1, 0, 1, 0, 1, 3, 2, 2, 0],
        [1, 1, 1, 0, 0, 0, 0],
    ),
)

_PNAS_CELL = from_tf_slim(
    ["separable_5x5_2", "max_pool_3x3", "separable_7x7_2", "max_pool_3x3", "separable_5x5_2",
     "separable_3x3_2", "separable_3x3_2", "max_pool_3x3", "separable_3x3_2", "none"],
    [1, 1, 0, 0, 0, 0, 4, 0, 1, 0],
    [1, 1, 0, 0, 0, 0, 0],
)
PNASNET_5 = Genotype(
    name="PNASNet-5",
    source="tensorflow/models research/slim/nets/nasnet/pnasnet.py: PNasNetNormalCell (also the reduction cell, strided)",
    normal=_PNAS_CELL,
    reduce=_PNAS_CELL,
)

AMOEBANET_A = Genotype(
    name="AmoebaNet-A",
    source="tensorflow/tpu models/official/amoeba_net/model_specs.py: cell_name 'amoeba_net_a'",
    normal=from_tf_slim(
        ["avg_pool_3x3", "max_pool_3x3", "separable_3x3_2", "none", "none", "avg_pool_3x3",
         "separable_3x3_2", "separable_5x5_2", "avg_pool_3x3", "separable_3x3_2"],
        [0, 0, 1, 1, 0, 1, 0, 2, 5, 0],
        [1, 0, 1, 0, 0, 1, 0],
    ),
    reduce=from_tf_slim(
        ["separable_3x3_2", "avg_pool_3x3", "max_pool_3x3", "separable_7x7_2", "max_pool_3x3",
         "max_pool_3x3", "separable_3x3_2", "1x7_7x1", "avg_pool_3x3", "separable_7x7_2"],
        [1, 0, 0, 2, 1, 0, 4, 0, 1, 0],
        [1, 1, 0, 0, 0, 0, 0],
    ),
)

DARTS_V2 = Genotype.from_darts(
    name="DARTS-V2",
    source="quark0/darts cnn/genotypes.py: DARTS_V2 (DARTS = DARTS_V2)",
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5],
)

GENOTYPES: dict[str, Genotype] = {
    "nasnet_a": NASNET_A,
    "pnasnet_5": PNASNET_5,
    "amoebanet_a": AMOEBANET_A,
    "darts_v2": DARTS_V2,
}
