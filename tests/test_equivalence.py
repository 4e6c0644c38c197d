"""Exactness against the reference ports, with random weights and non-trivial BN statistics.

``pretrainedmodels`` (Cadene) nasnetamobile hard-codes TF's padding for 224; timm's nasnetalarge
and pnasnet5large pad dynamically. One deviation of timm from TF is corrected in the oracle here:
its ``AvgPool2dSame`` pads with zeros and then counts them in the average, where TF divides by the
real pixels only. Our model follows TF; ``test_timm_avg_pool_deviation_is_the_only_difference``
shows that this op is the whole difference.
"""

import pytest
import torch
import torch.nn.functional as F

import nasnet_backbones as nb
from nasnet_backbones.convert import convert_state_dict

from helpers import randomize_batchnorm

pretrainedmodels = pytest.importorskip("pretrainedmodels")
timm = pytest.importorskip("timm")


def assert_same_logits(ref, ours, x):
    with torch.no_grad():
        a, b = ref(x), ours(x)
    scale = a.abs().max().item()
    assert (a - b).abs().max().item() <= 1e-4 * scale, f"max diff {(a - b).abs().max().item()} vs scale {scale}"


def ported(reference, name, path=None, background=False):
    """Our model with the reference's weights: converted in memory, or, with ``path``, saved the way
    the public checkpoint is (``background``: TF's 1001-class head) and loaded with ``pretrained=path``."""
    randomize_batchnorm(reference)
    reference.eval()
    if path is None:
        model = nb.create_model(name).eval()
        model.load_state_dict(convert_state_dict(model, reference.state_dict()))
        return model
    state = dict(reference.state_dict())
    if background:
        w, b = state["last_linear.weight"], state["last_linear.bias"]
        state["last_linear.weight"] = torch.cat([torch.randn(1, w.shape[1]), w])
        state["last_linear.bias"] = torch.cat([torch.randn(1), b])
    torch.save(state, path)
    return nb.create_model(name, pretrained=path).eval()


@pytest.fixture
def tf_exact_timm_avg_pool(monkeypatch):
    from timm.layers.padding import pad_same
    from timm.layers.pool2d_same import AvgPool2dSame

    def forward(self, x):
        ones = torch.ones_like(x[:1, :1])
        total = F.avg_pool2d(pad_same(x, self.kernel_size, self.stride), self.kernel_size, self.stride)
        count = F.avg_pool2d(pad_same(ones, self.kernel_size, self.stride), self.kernel_size, self.stride)
        return total / count

    monkeypatch.setattr(AvgPool2dSame, "forward", forward)


def test_nasnet_a_mobile_equals_cadene_port():
    torch.manual_seed(0)
    ref = pretrainedmodels.nasnetamobile(num_classes=1000, pretrained=None)
    ours = ported(ref, "nasnet_a_mobile")
    assert_same_logits(ref, ours, torch.randn(2, 3, 224, 224))


@pytest.mark.slow
def test_nasnet_a_large_equals_timm(tf_exact_timm_avg_pool, tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model("nasnetalarge")
    ours = ported(ref, "nasnet_a_large", tmp_path / "nasnetalarge-tf_in1k.pth")
    assert_same_logits(ref, ours, torch.randn(1, 3, 331, 331))
    assert_same_logits(ref, ours, torch.randn(1, 3, 224, 224))  # even sizes everywhere: asymmetric pads
    assert_same_logits(ref, ours, torch.randn(1, 3, 250, 250))


@pytest.mark.slow
def test_timm_avg_pool_deviation_is_the_only_difference():
    torch.manual_seed(0)
    ref = timm.create_model("nasnetalarge")
    ours = ported(ref, "nasnet_a_large")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        diff = (ref(x) - ours(x)).abs().max().item()
    assert diff > 1e-4  # without the correction, timm differs from TF


@pytest.mark.slow
def test_pnasnet_5_large_equals_timm(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model("pnasnet5large")  # no stride-2 average pools: no correction needed
    # The public file keeps TF's background class (timm loads it with label_offset=1).
    ours = ported(ref, "pnasnet_5_large", tmp_path / "pnasnet5large-1001.pth", background=True)
    assert_same_logits(ref, ours, torch.randn(1, 3, 331, 331))
    assert_same_logits(ref, ours, torch.randn(1, 3, 256, 256))
