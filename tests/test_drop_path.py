import pytest
import torch

from nasnet_backbones import build_nasnet, genotypes
from nasnet_backbones.drop_path import ScheduledDropPath


def test_keep_prob_follows_tf_v3_schedule():
    dp = ScheduledDropPath(drop_prob=0.4, cell_index=2, total_cells=6)
    layer_keep = 1 - 3 / 6 * 0.4  # deeper cells drop more
    for progress in (0.0, 0.25, 1.0, 3.0):
        dp.progress = progress
        assert dp.keep_prob == pytest.approx(1 - min(1.0, progress) * (1 - layer_keep))


def test_drop_is_per_sample_and_rescaled():
    torch.manual_seed(0)
    dp = ScheduledDropPath(0.5, cell_index=0, total_cells=1).train()
    x = torch.ones(4000, 2, 3, 3)
    y = dp(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}  # whole samples survive (x / keep) or vanish
    assert (per_sample == per_sample[:, :1]).all()
    assert y.mean().item() == pytest.approx(1.0, abs=0.05)
    assert torch.equal(dp.eval()(x), x)


def test_model_progress_api_and_identity_ops_not_dropped():
    model = build_nasnet(genotypes.NASNET_A, num_cells=3, num_filters=8, stem="cifar", num_classes=10,
                         drop_path_prob=0.5)
    model.set_drop_path_progress(0.5)
    drops = [m for m in model.modules() if isinstance(m, ScheduledDropPath)]
    assert len(drops) == 5 and all(d.progress == 0.5 for d in drops)
    assert drops[-1].keep_prob < drops[0].keep_prob
    cell = model.cells["cell_0"]
    # NASNet-A normal block 2 is avg_pool(0) + identity(1): the identity side is never dropped.
    assert cell.blocks[2].drop == (True, False)
    assert cell.blocks[4].drop == (True, False)


def test_drop_path_changes_training_output_only():
    torch.manual_seed(0)
    model = build_nasnet(genotypes.NASNET_A, num_cells=3, num_filters=8, stem="cifar", num_classes=10,
                         drop_path_prob=0.5, aux_head=False)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    model.set_drop_path_progress(0.0)  # TF: no drop at step 0
    torch.manual_seed(1); a = model(x)
    torch.manual_seed(2); b = model(x)
    torch.testing.assert_close(a, b)
    model.set_drop_path_progress(1.0)
    torch.manual_seed(1); a = model(x)
    torch.manual_seed(2); b = model(x)
    assert not torch.allclose(a, b)
