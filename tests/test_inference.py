"""optimize_for_inference: BatchNorm folded, channels_last, prepacked oneDNN weights, torch.compile; outputs
unchanged."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

sys.path.insert(0, str(Path(__file__).parent))
from test_tracing import input_size, small_copy, structures  # noqa: E402

from nasnet_backbones.inference import fold_batchnorm, optimize_for_inference  # noqa: E402
from nasnet_backbones.prepacked import PrepackedConv2d, prepacking_available  # noqa: E402


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


needs_onednn = pytest.mark.skipif(not prepacking_available(), reason="this PyTorch build has no oneDNN")


@needs_onednn
def test_prepacked_convolutions_fuse_the_following_relu_and_keep_outputs():
    model = small_copy("nasnet_a_mobile", aux_head=False).eval()
    fast = optimize_for_inference(model)
    packed = [m for m in fast.modules() if isinstance(m, PrepackedConv2d)]
    plain = [m for m in fast.modules() if isinstance(m, nn.Conv2d) and not any(m is p.conv for p in packed)]
    assert packed and not plain  # every convolution is wrapped
    # the first pointwise conv of each 2-layer separable stack carries the next layer's ReLU
    stacks = [m for m in fast.modules() if isinstance(m, nn.Sequential) and "pw2" in m._modules]
    assert stacks and all(m.pw1.relu and isinstance(m.relu2, nn.Identity) and not m.pw2.relu for m in stacks)
    n = input_size("nasnet_a_mobile")
    with torch.inference_mode():
        for h, w in [(n, n), (n + 3, n - 5)]:  # the weights packed for the first shape serve the others
            x = torch.randn(1, 3, h, w)
            assert relative_error(fast(x), model(x)) < 1e-5
        assert all(p._packed is not None for p in packed)


@needs_onednn
def test_prepacked_cache_follows_the_weights_and_stays_out_of_checkpoints():
    model = small_copy("darts_v2_cifar").eval()
    fast = optimize_for_inference(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        before = fast(x)
    state = fast.state_dict()
    assert all(t.layout == torch.strided for t in state.values())  # no oneDNN tensors saved
    assert not any("_packed" in k for k in state)
    clone = copy.deepcopy(fast)  # drops the cache, rebuilds it on its first call
    assert all(m._packed is None for m in clone.modules() if isinstance(m, PrepackedConv2d))
    with torch.inference_mode():
        assert torch.equal(clone(x), before)
    first = next(m for m in fast.modules() if isinstance(m, PrepackedConv2d))
    with torch.no_grad():
        first.conv.weight.mul_(2.0)  # an in-place change must reach the packed copy
        model_changed = copy.deepcopy(fast)  # packs the changed weights afresh
    with torch.inference_mode():
        assert not torch.allclose(fast(x), before)
        assert relative_error(fast(x), model_changed(x)) < 1e-6


@needs_onednn
def test_prepacked_model_traces_through_the_plain_convolutions():
    model = small_copy("darts_v2_cifar").eval()
    fast = optimize_for_inference(model)
    x = torch.randn(1, 3, 32, 32)
    graph = torch.fx.symbolic_trace(fast)
    assert not any("mkldnn" in str(node.target) for node in graph.graph.nodes)
    with torch.inference_mode():
        want = model(x)
        assert relative_error(graph(x), want) < 1e-5
        traced = torch.jit.trace(fast, x, check_trace=False)
        assert "mkldnn" not in str(traced.inlined_graph)
        assert relative_error(traced(x), want) < 1e-5
    # an input that needs gradients takes the plain convolutions, which autograd can run
    xg = x.clone().requires_grad_()
    fast(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_prepack_false_leaves_plain_convolutions():
    fast = optimize_for_inference(small_copy("darts_v2_cifar").eval(), prepack=False)
    assert not any(isinstance(m, PrepackedConv2d) for m in fast.modules())
