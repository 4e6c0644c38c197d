"""Every registered architecture traces exactly: torch.fx, torchvision's feature extractor,
torch.jit.script and torch.export with a dynamic batch, height and width, in eval and train mode.

Each registered model is checked on a small copy of itself (its genotype and macro configuration,
one cell per stack, width 8): the layers and code paths are the ones the full-size model runs.
Sizes include odd ones, where TF 'SAME' padding differs from PyTorch's.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import torch
import torch.fx
from torch.export import Dim
from torchvision.models.feature_extraction import create_feature_extractor

from nasnet_backbones import NASNet, NASNetOutputs, create_model, get_model_entry, list_models


def small_copy(name: str, *, drop_path_prob: float = 0.0, aux_head: bool | None = None) -> NASNet:
    """The registered model ``name`` with one cell per stack (PNASNet: its reductions among 5 cells)."""
    entry = get_model_entry(name)
    c = entry.config
    cells = 5 if c.reductions_in_num_cells else 3
    config = replace(c, num_cells=cells, num_filters=8, stem_filters=None, drop_path_prob=drop_path_prob,
                     aux_head=c.aux_head if aux_head is None else aux_head)
    torch.manual_seed(0)
    model = NASNet(entry.genotype, config, num_classes=7, img_size=input_size(name))
    for m in model.modules():  # non-trivial BatchNorm statistics, so eval mode is a real test
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def input_size(name: str) -> int:
    return 32 if get_model_entry(name).config.stem == "cifar" else 96


def sizes(name: str) -> list[tuple[int, int]]:
    """An even square and an odd, non-square size at the model's scale."""
    n = input_size(name)
    return [(n, n), (n + 1, n + 3)]


def structures() -> list[str]:
    """One registered name per distinct small copy (rows of the same genotype and macro share one)."""
    seen, names = set(), []
    for name in list_models():
        entry = get_model_entry(name)
        key = (entry.genotype, replace(entry.config, num_cells=1, num_filters=1, stem_filters=None))
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


def genotypes_once() -> list[str]:
    """One registered name per genotype, the first of its rows (torch.export takes ~10 s a model)."""
    seen, names = set(), []
    for name in structures():
        if get_model_entry(name).genotype not in seen:
            seen.add(get_model_entry(name).genotype)
            names.append(name)
    return names


def script(model: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # PyTorch 2.9+ marks torch.jit.script deprecated; its users still call it
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
        return torch.jit.script(model)


def run_seeded(fn, x: torch.Tensor, seed: int = 1):
    torch.manual_seed(seed)
    return fn(x)


def assert_same_outputs(got, want) -> None:
    if isinstance(want, NASNetOutputs):
        assert isinstance(got, NASNetOutputs)
        torch.testing.assert_close(got.logits, want.logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.aux_logits, want.aux_logits, rtol=1e-5, atol=1e-5)
    else:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_structures_cover_every_registered_model():
    names = structures()
    assert {get_model_entry(n).genotype for n in names} == {get_model_entry(n).genotype for n in list_models()}
    assert len(names) >= 5  # NASNet-A (ImageNet and CIFAR), PNASNet-5, AmoebaNet-A, DARTS-V2


@pytest.mark.parametrize("name", structures())
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_fx_and_script_match_eager(name, mode):
    model = small_copy(name, drop_path_prob=0.3 if mode == "train" else 0.0)
    model.train(mode == "train")
    traced = torch.fx.symbolic_trace(model)
    scripted = script(model)
    for h, w in sizes(name):
        x = torch.randn(2, 3, h, w)
        want = run_seeded(model, x)
        assert_same_outputs(run_seeded(traced, x), want)
        # A scripted model returns the logits only (one return type); the aux logits stay eager.
        logits = want.logits if isinstance(want, NASNetOutputs) else want
        torch.testing.assert_close(run_seeded(scripted, x), logits, rtol=1e-5, atol=1e-5)
    if mode == "train" and model.aux_head is not None:
        assert isinstance(want, NASNetOutputs)  # the aux head really ran in the traced comparison


@pytest.mark.parametrize("name", ["nasnet_a_mobile", "darts_v2_cifar"])
def test_feature_extractor_returns_the_declared_features(name):
    """torchvision's create_feature_extractor (fx) on the modules ``feature_info`` names gives the
    feature maps the network's own ``features_only`` mode returns."""
    model = small_copy(name, aux_head=False).eval()  # the aux head would make train and eval graphs differ
    nodes = {info["module"]: info["name"] for info in model.feature_info}
    extractor = create_feature_extractor(model, return_nodes=nodes)
    features_model = NASNet(model.genotype, model.config, num_classes=7, img_size=input_size(name),
                            features_only=True)
    missing, unexpected = features_model.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith(("classifier", "aux_head")) for k in unexpected)
    features_model.eval()
    for h, w in sizes(name):
        x = torch.randn(1, 3, h, w)
        got, want = extractor(x), features_model(x)
        assert list(got) == list(want) == [info["name"] for info in model.feature_info]
        for key in want:
            torch.testing.assert_close(torch.relu(got[key]), want[key], rtol=1e-5, atol=1e-5)


def test_full_size_mobile_traces_and_scripts():
    """The registered NASNet-A mobile itself, not a small copy."""
    model = create_model("nasnet_a_mobile", num_classes=10).eval()
    x = torch.randn(1, 3, 225, 224)
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(script(model)(x), want, rtol=1e-5, atol=1e-5)


def dynamic_export(model: torch.nn.Module, x: torch.Tensor) -> torch.export.ExportedProgram:
    shapes = ({0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC},)
    return torch.export.export(model, (x,), dynamic_shapes=shapes)


@pytest.mark.parametrize("name", genotypes_once())
def test_export_with_dynamic_batch_and_size_is_exact(name):
    """One program for every batch and size: exact at sizes (odd, non-square) it was not traced at."""
    model = small_copy(name).eval()
    n = input_size(name)
    program = dynamic_export(model, torch.randn(2, 3, n, n))
    exported = program.module()
    for batch, (h, w) in [(1, (n + 1, n + 3)), (3, (n + 14, n + 5)), (2, (2 * n - 1, n))]:
        x = torch.randn(batch, 3, h, w)
        with torch.no_grad():
            torch.testing.assert_close(exported(x), model(x), rtol=1e-5, atol=1e-5)


def test_export_in_train_mode_with_aux_head_and_drop_path():
    model = small_copy("nasnet_a_mobile", drop_path_prob=0.3, aux_head=True).train()
    exported = dynamic_export(model, torch.randn(2, 3, 96, 96)).module()
    x = torch.randn(3, 3, 97, 99)
    want = run_seeded(model, x)
    got = run_seeded(exported, x)
    assert isinstance(want, NASNetOutputs)
    torch.testing.assert_close(got[0], want.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], want.aux_logits, rtol=1e-5, atol=1e-5)
