"""The weight-sharing supernet: a genotype's sub-network is the standalone network, weight for weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import randomize_batchnorm
from nasnet_backbones import build_nasnet
from search import SearchSpace, SearchSpaceError
from search.supernet import Supernet

SPACE = SearchSpace()


@pytest.fixture(scope="module")
def supernet():
    net = Supernet(SPACE, num_cells=3, num_filters=6).eval()
    randomize_batchnorm(net)
    return net


def _standalone(genotype, supernet):
    model = build_nasnet(genotype, num_cells=3, num_filters=6, stem="cifar", num_classes=10, img_size=16).eval()
    model.load_state_dict(supernet.subnet_state_dict(genotype), strict=True)
    return model


def _two_output_reduction() -> list[int]:
    """Decisions whose reduction cell concatenates exactly two blocks (the next cell then passes its
    state 1 through unprojected) and whose normal cell concatenates one."""
    normal = [0, 1, 10, 11, 0, 0, 1, 4, 5, 0, 2, 3, 12, 0, 0, 0, 1, 1, 2, 0, 4, 5, 10, 10, 0]
    reduce = [0, 1, 11, 12, 0, 1, 0, 5, 4, 0, 2, 3, 10, 0, 0, 0, 1, 6, 7, 0, 4, 0, 11, 1, 0]
    return normal + reduce


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_subnetwork_equals_the_standalone_network(supernet, seed):
    genotype = SPACE.decode(SPACE.sample(np.random.default_rng(seed)))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        shared, alone = supernet(x, genotype), _standalone(genotype, supernet)(x)
    torch.testing.assert_close(shared, alone, rtol=1e-5, atol=1e-6)


def test_pass_through_state_and_training_mode(supernet):
    genotype = SPACE.decode(_two_output_reduction())
    assert len(genotype.reduce.concat) == 2 and len(genotype.normal.concat) == 1
    weights = supernet.subnet_state_dict(genotype)
    assert not any(k.startswith("cells.reduction_1.preprocess_prev.") for k in weights)  # 2 x 12 = 24 channels
    alone = _standalone(genotype, supernet)
    x = torch.randn(4, 3, 16, 16)
    supernet.train()
    alone.train()
    try:
        torch.testing.assert_close(supernet(x, genotype), alone(x), rtol=1e-5, atol=1e-6)  # batch statistics
    finally:
        supernet.eval()


def test_weights_are_shared_not_copied(supernet):
    rng = np.random.default_rng(5)
    a, b = SPACE.sample(rng), SPACE.sample(rng)
    b[2] = a[2]  # same first op in the normal cell's block 0, reading the same kind of state
    b[0] = a[0]
    ga, gb = SPACE.decode(a), SPACE.decode(b)
    key = "cells.cell_0.blocks.0.left."
    wa = {k: v for k, v in supernet.subnet_state_dict(ga).items() if k.startswith(key)}
    wb = {k: v for k, v in supernet.subnet_state_dict(gb).items() if k.startswith(key)}
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ops_run = []
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: ops_run.append(name))
             for name, m in supernet.cells["cell_0"].ops.items()]
    with torch.no_grad():
        supernet(torch.randn(1, 3, 8, 8), ga)
    for h in hooks:
        h.remove()
    assert len(ops_run) == 2 * SPACE.num_blocks  # only the chosen ops run


def test_concatenating_blocks_are_refused():
    with pytest.raises(SearchSpaceError, match="needs 'add' as the only combine op"):
        Supernet(SearchSpace(combine_ops=("add", "concat")), num_cells=3, num_filters=4)
