"""optimize_for_inference: BatchNorm folded, channels_last, torch.compile; outputs unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

sys.path.insert(0, str(Path(__file__).parent))
from test_tracing import input_size, small_copy, structures  # noqa: E402

from nasnet_backbones.inference import fold_batchnorm, optimize_for_inference  # noqa: E402


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("name", structures())
@pytest.mark.parametrize("channels_last", [True, False])
def test_folded_model_equals_original(name, channels_last):
    model = small_copy(name).eval()
    fast = optimize_for_inference(model, channels_last=channels_last)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())  # every one folded
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    n = input_size(name)
    for h, w in [(n, n), (n + 1, n + 6)]:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            assert relative_error(fast(x), model(x)) < 1e-5


def test_features_only_model_and_frozen_batchnorm():
    model = small_copy("nasnet_a_4_1056", aux_head=False)
    model = type(model)(model.genotype, model.config, num_classes=0, img_size=96, features_only=True).eval()
    # detectron2 and torchvision freeze BatchNorm into FrozenBatchNorm2d; those fold too.
    stem_bn = model.stem.bn
    frozen = FrozenBatchNorm2d(stem_bn.num_features, eps=stem_bn.eps)
    frozen.weight.uniform_(0.5, 1.5)
    frozen.running_var.uniform_(0.5, 2.0)
    model.stem.bn = frozen
    fast = optimize_for_inference(model)
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in fast.modules())
    x = torch.randn(1, 3, 97, 96)
    with torch.no_grad():
        want, got = model(x), fast(x)
    assert list(got) == list(want)
    for key in want:
        assert relative_error(got[key], want[key]) < 1e-5


def test_fold_refuses_a_training_model():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(small_copy("darts_v2_cifar").train())


def test_compiled_model_equals_original():
    model = small_copy("darts_v2_cifar").eval()
    fast = optimize_for_inference(model, compile=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert relative_error(fast(x), model(x)) < 1e-5
