"""The catalogue through timm (``import nasnet_backbones.timm``), checked with timm itself.

The contracts are the ones timm's own model tests hold its models to: names and tags in timm's
registry, real pretrained cfgs (input size, mean/std, first conv and classifier naming modules,
pool size), forward and backward, ``num_classes=0`` / ``reset_classifier`` / ``global_pool=''``,
``features_only`` and ``forward_intermediates`` against ``feature_info``, TorchScript and torch.fx,
plus what timm's ``train.py`` relies on (``drop_rate``, ``drop_path_rate``, gradient
checkpointing, ``pretrained_cfg_overlay=dict(file=...)``). A tiny model registered here as a user
would (catalogue, then :func:`register_timm_models`) keeps most of them fast; ``nasnet_a_mobile``
at 64 px is the mobile-size case.
"""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
import warnings

import pytest
import torch

import nasnet_backbones as nb
from nasnet_backbones import genotypes
from nasnet_backbones.catalogue import ModelEntry, PaperFigures, scratch_catalogue
from nasnet_backbones.convert import CheckpointMismatchError
from nasnet_backbones.nasnet import stack_config
from nasnet_backbones.weights import WeightsNotFoundError

from helpers import randomize_batchnorm

timm = pytest.importorskip("timm")
import nasnet_backbones.timm as nb_timm  # noqa: E402  (after the skip: the module imports timm)

TINY = "nasnet_a_tiny_timm_test"
TINY_TAG = "test_in10"
TINY_FILE = "nasnet-a-tiny-timm-test.safetensors"


@pytest.fixture(scope="module", autouse=True)
def tiny_registered():
    """A 1-cell-per-stack NASNet-A (width 8, 64 px, 10 classes) with a weights tag whose file is
    not downloadable (a ``file:`` URL that does not exist), registered as a user would."""
    with scratch_catalogue():
        nb.register_model(ModelEntry(
            TINY, genotypes.NASNET_A, stack_config(1, 8, **{"bn_eps": 1e-3, "aux_head": True, "dropout": 0.5}),
            64, 10, PaperFigures(0.1, None, None, None, "test"), "tiny NASNet-A for the timm tests"))
        nb.register_weights(nb.Weights(
            model=TINY, tag=TINY_TAG, url=f"file:///nonexistent/nasnet-timm-test/{TINY_FILE}", hash_prefix=None,
            layout="nasnet_backbones", checkpoint_classes=10, input_size=64, crop_pct=0.9, interpolation="bicubic",
            published_top1=0.0, published_top5=0.0, metrics_source="none", params=0, mult_adds=0, origin="test",
            num_classes=10))
        assert nb_timm.register_timm_models([TINY]) == [TINY]
        yield


def tiny(**kwargs):
    torch.manual_seed(0)
    model = timm.create_model(TINY, **kwargs)
    randomize_batchnorm(model)
    return model


def x_of(size, batch=2, chans=3):
    return torch.randn(batch, chans, size, size, generator=torch.Generator().manual_seed(1))


# -- registry and pretrained cfgs ---------------------------------------------------------------

def test_every_catalogue_name_and_tag_is_in_timm_and_timm_keeps_its_own():
    for name in nb.list_models():
        assert timm.models.is_model(name), name
        assert timm.models.model_entrypoint(name).__module__ == "nasnet_backbones.timm"
    pretrained = set(timm.list_pretrained())
    for name in nb.list_models():
        for weights in nb.list_weights(name):
            tag = weights.split(".", 1)[1]
            assert f"{name}.{tag}" in pretrained
    # the package's default weights are timm's default tag
    assert timm.models.get_pretrained_cfg("nasnet_a_large").tag == "tf_in1k"
    assert timm.models.get_pretrained_cfg("nasnet_a_large").tag == nb.get_weights("nasnet_a_large").tag
    for theirs in ("nasnetalarge", "pnasnet5large"):
        assert timm.models.model_entrypoint(theirs).__module__.startswith("timm.models.")


def test_registering_again_and_reimporting_is_harmless():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # timm warns when a name is overwritten
        assert nb_timm.register_timm_models() == []
        importlib.reload(nb_timm)
    assert timm.models.is_model("nasnet_a_mobile") and callable(nb_timm.nasnet_a_mobile)


def test_importing_the_package_does_not_import_timm():
    code = "import sys, nasnet_backbones; print('timm' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_pretrained_cfgs_come_from_the_catalogue():
    mobile = timm.models.get_pretrained_cfg("nasnet_a_mobile.cadene_in1k")
    weights = nb.get_weights("nasnet_a_mobile", "cadene_in1k")
    assert mobile.url == weights.url and mobile.tag == "cadene_in1k" and mobile.architecture == "nasnet_a_mobile"
    assert (mobile.input_size, mobile.pool_size, mobile.crop_pct, mobile.crop_mode, mobile.interpolation) == (
        (3, 224, 224), (7, 7), 0.875, "center", "bilinear")
    assert mobile.mean == mobile.std == (0.5, 0.5, 0.5) and mobile.num_classes == 1000
    assert mobile.license == weights.license and (mobile.first_conv, mobile.classifier) == ("stem.conv", "classifier")
    large = timm.models.get_pretrained_cfg("nasnet_a_6_4032.tf_in1k")
    assert (large.input_size, large.pool_size, large.crop_pct, large.interpolation) == (
        (3, 331, 331), (11, 11), 0.911, "bicubic")
    # 1001-class TF heads lose the background row in the checkpoint filter, not through label_offset
    assert timm.models.get_pretrained_cfg("pnasnet_5_large.tf_in1k").label_offset is None
    no_weights = timm.models.get_pretrained_cfg("nasnet_a_5_1538")
    assert not no_weights.has_weights and no_weights.input_size == (3, 299, 299) and no_weights.crop_pct == 0.875
    cifar = timm.models.get_pretrained_cfg("nasnet_a_cifar_6_768")
    assert cifar.input_size == (3, 32, 32) and cifar.num_classes == 10 and cifar.mean == (0.4914, 0.4822, 0.4465)
    assert "nasnet_a_cifar_6_768" not in timm.list_models(pretrained=True)


def test_cfg_names_real_modules_and_the_pool_size_is_the_feature_map():
    for name, size in ((TINY, 64), ("nasnet_a_mobile", 224)):
        model = timm.create_model(name).eval()
        cfg = model.pretrained_cfg
        state = model.state_dict()
        assert f"{cfg['first_conv']}.weight" in state and f"{cfg['classifier']}.weight" in state
        assert cfg["input_size"] == (3, size, size)
        with torch.no_grad():
            features = model.forward_features(torch.randn(1, *cfg["input_size"]))
        assert features.shape[1:] == (model.num_features, *cfg["pool_size"])
        assert timm.data.resolve_data_config(model=model)["input_size"] == (3, size, size)


def test_create_by_name_tag_and_refuse_an_unknown_tag():
    model = timm.create_model("nasnet_a_mobile.cadene_in1k")
    assert model.pretrained_cfg["tag"] == "cadene_in1k" and model.num_classes == 1000
    assert timm.create_model(f"{TINY}.{TINY_TAG}").pretrained_cfg["crop_pct"] == 0.9
    with pytest.raises(ValueError, match=r"unknown weights tag 'nope' for nasnet_a_mobile; tags: cadene_in1k"):
        timm.create_model("nasnet_a_mobile.nope")
    with pytest.raises(TypeError, match="does not take drop_block_rate"):
        timm.create_model(TINY, drop_block_rate=0.1)
    with pytest.raises(ValueError, match=r"nasnet_a_mobile: drop_path_rate must be in \[0, 1\), got 1.5"):
        timm.create_model("nasnet_a_mobile", drop_path_rate=1.5)


# -- forward, backward, heads --------------------------------------------------------------------

@pytest.mark.parametrize("name,size", [(TINY, 64), ("nasnet_a_mobile", 64)])
def test_forward_and_backward_reach_every_parameter(name, size):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=42).train()
    assert model.aux_head is None  # off through timm
    out = model(x_of(size))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 42) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_aux_head_on_request_leaves_forward_a_tensor():
    model = tiny(aux_head=True, img_size=96).train()  # the aux head needs a 5x5 map: 96 px here
    x = x_of(96)
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    torch.manual_seed(3)
    both = model.forward_with_aux(x)
    assert isinstance(both, nb.NASNetOutputs) and both.aux_logits.shape == (2, 10)
    (both.logits.sum() + both.aux_logits.sum()).backward()
    assert all(p.grad is not None for p in model.aux_head.parameters())
    assert isinstance(model.eval()(x), torch.Tensor)
    # the package's own builder still gives its trainer both outputs from forward
    package_model = nb.create_model(TINY, img_size=96).train()  # the catalogue's config has the aux head on
    assert isinstance(package_model(x), nb.NASNetOutputs)


def test_head_sizes_num_classes_zero_and_global_pool():
    model = tiny().eval()
    x = x_of(64)
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert model.head_hidden_size == model.num_features == pre_logits.shape[1] == features.shape[1]
        model.reset_classifier(0)
        assert model.num_classes == 0 and isinstance(model.get_classifier(), torch.nn.Identity)
        pooled = model(x)
        torch.testing.assert_close(pooled, pre_logits, rtol=0, atol=0)
        model.reset_classifier(0, "")
        unpooled = model(x)
        assert unpooled.shape == features.shape
        torch.testing.assert_close(unpooled, torch.relu(features), rtol=0, atol=0)
        model.reset_classifier(7, "max")
        assert model(x).shape == (2, 7) and model.get_classifier().out_features == 7
        headless = timm.create_model(TINY, num_classes=0, global_pool="").eval()
        assert headless(x).dim() == 4
        fast = tiny(global_pool="fast").eval()
        torch.testing.assert_close(fast(x), tiny().eval()(x), rtol=0, atol=0)  # "fast" is the average
        assert not torch.equal(tiny(global_pool="max").eval()(x), tiny().eval()(x))
    with pytest.raises(ValueError, match="global_pool=''.*num_classes=0"):
        timm.create_model(TINY, global_pool="")
    with pytest.raises(ValueError, match="global_pool must be one of"):
        timm.create_model(TINY, global_pool="catavgmax")


# -- features ----------------------------------------------------------------------------------

def check_against_feature_info(maps, channels, reductions, size, model_name=None):
    assert len(maps) == len(channels) == len(reductions)
    for t, c, r in zip(maps, channels, reductions):
        assert t.shape[1] == c
        # the VALID stem conv makes the stride-2 map one pixel smaller; SAME cells round up
        assert math.ceil(size / r) - 1 <= t.shape[-1] <= math.ceil(size / r)
        assert (t >= 0).all()  # ReLU-activated, as the next cell reads them


@pytest.mark.parametrize("name,size", [(TINY, 64), ("nasnet_a_mobile", 64)])
def test_features_only_follows_feature_info(name, size):
    full = timm.create_model(name).eval()
    info = timm.models.FeatureInfo(full.feature_info, len(full.feature_info))
    assert info.reduction() == [2, 4, 8, 16, 32]
    x = x_of(size, batch=1)
    with torch.no_grad():
        everything = full.forward_intermediates(x, intermediates_only=True)
    torch.manual_seed(0)
    features = timm.create_model(name, features_only=True, out_indices=(1, 3, 4)).eval()
    assert type(features).__name__ == "FeatureGetterNet"
    features.model.load_state_dict(full.state_dict(), strict=False)  # the pruned network has fewer tensors
    assert features.feature_info.reduction() == [4, 16, 32]
    assert features.feature_info.channels() == [info.channels()[i] for i in (1, 3, 4)]
    with torch.no_grad():
        maps = features(x)
    check_against_feature_info(maps, features.feature_info.channels(), features.feature_info.reduction(), size)
    for got, index in zip(maps, (1, 3, 4)):
        torch.testing.assert_close(got, everything[index], rtol=0, atol=0)
    # the classifier and the cells after the last wanted map are pruned
    shallow = timm.create_model(name, features_only=True, out_indices=(0, 1, 2))
    assert len(shallow.model.cells) < len(full.cells) and not any(k.startswith("classifier.")
                                                                  for k in shallow.state_dict())
    assert len(timm.create_model(name, features_only=True).feature_info.channels()) == 5


def test_features_only_default_on_a_cifar_model_lists_its_three_maps():
    model = timm.create_model("nasnet_a_cifar_6_768", features_only=True).eval()
    assert model.feature_info.reduction() == [1, 2, 4]
    with torch.no_grad():
        maps = model(x_of(32, batch=1))
    check_against_feature_info(maps, model.feature_info.channels(), model.feature_info.reduction(), 32)


def test_forward_intermediates_indices_and_intermediates_only():
    model = tiny().eval()
    x = x_of(64)
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        check_against_feature_info(maps, info.channels(), info.reduction(), 64)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        picked = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        early_final, early = model.forward_intermediates(x, indices=[1], stop_early=True)
    for got, want in zip(last_two + picked + early, maps[3:] + [maps[0], maps[4], maps[1]]):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert len(last_two) == 2 and len(picked) == 2 and len(early) == 1
    assert early_final.shape[1] == info.channels()[1]  # stopped at the stride-4 cell
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")
    with pytest.raises(IndexError, match="feature index 5 is out of range"):
        model.forward_intermediates(x, indices=[5])
    kept = model.prune_intermediate_layers(indices=[1, 2])
    assert kept == [1, 2] and model.num_classes == 0 and model.num_features == model.head_hidden_size == info.channels()[2]
    with torch.no_grad():
        pruned_final, pruned = model.forward_intermediates(x, indices=[1, 2])
        assert model.forward_features(x).shape[1] == info.channels()[2]
    for got, want in zip(pruned, maps[1:3]):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_group_matcher_orders_stem_cells_then_head():
    from timm.models import group_parameters

    model = tiny()
    fine = group_parameters(model, model.group_matcher())
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    names = [n for n, _ in model.named_parameters()]
    assert sorted(n for group in fine.values() for n in group) == sorted(names)
    assert all(n.startswith("stem.") or n.startswith("cells.stem_") for n in fine[0])
    assert fine[max(fine)] == ["classifier.weight", "classifier.bias"]
    assert len(fine) == 2 + len([c for c in model.cells if not c.startswith("stem_")])
    assert len(coarse) < len(fine)


# -- TorchScript and torch.fx ------------------------------------------------------------------

def test_torchscript_of_the_timm_model_gives_the_same_outputs():
    model = tiny().eval()
    x = x_of(64)
    with torch.no_grad(), warnings.catch_warnings():
        # PyTorch 2.9+ marks torch.jit.script deprecated; timm's tests (and users) still call it
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
        scripted = torch.jit.script(model)
        torch.testing.assert_close(scripted(x), model(x), rtol=0, atol=0)
        torch.testing.assert_close(scripted(x_of(96)), model(x_of(96)), rtol=0, atol=0)  # another size


@pytest.mark.parametrize("name,size", [(TINY, 64), ("nasnet_a_mobile", 64)])
def test_fx_feature_extractor_gives_the_same_outputs(name, size):
    from timm.models._features_fx import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor

    model = timm.create_model(name).eval()
    randomize_batchnorm(model)
    # timm's tracer settings, as its feature_cls="fx" and its model tests use them
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    stride16 = model.feature_info[3]["module"]
    extractor = create_feature_extractor(model, return_nodes={stride16: "stride16", "classifier": "logits"},
                                         tracer_kwargs=tracer_kwargs)
    x = x_of(size)
    with torch.no_grad():
        out = extractor(x)
        assert torch.equal(out["logits"], model(x))
        assert torch.equal(torch.relu(out["stride16"]), model.forward_intermediates(x, indices=[3])[1][0])
        if name == TINY:
            assert torch.equal(torch.fx.symbolic_trace(model)(x), model(x))


# -- training knobs ------------------------------------------------------------------------------

def train_logits(model, seed=5):
    torch.manual_seed(seed)
    return model.train()(x_of(64))


def test_drop_rates_act_in_training_only():
    plain, dropped, drop_path = tiny(), tiny(drop_rate=0.5), tiny(drop_path_rate=0.3)  # the same weights
    assert dropped.dropout.p == 0.5 and plain.dropout.p == 0.0  # timm's default, not the catalogue's 0.5
    rates = {m.drop_prob for m in drop_path.modules() if type(m).__name__ == "ScheduledDropPath"}
    assert rates == {0.3}
    x = x_of(64)
    with torch.no_grad():  # before training steps move the BatchNorm statistics
        want = plain.eval()(x)
        assert torch.equal(dropped.eval()(x), want) and torch.equal(drop_path.eval()(x), want)
    assert torch.equal(train_logits(plain), train_logits(plain))
    assert not torch.equal(train_logits(dropped), train_logits(plain))
    assert not torch.equal(train_logits(drop_path), train_logits(plain))


def test_grad_checkpointing_gives_the_same_loss_and_gradients():
    model = tiny(drop_path_rate=0.2, num_classes=5)
    x, target = x_of(64), torch.tensor([1, 3])

    def step():
        model.zero_grad()
        torch.manual_seed(11)
        loss = torch.nn.functional.cross_entropy(model.train()(x), target)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss, grads = step()
    model.set_grad_checkpointing(True)
    loss_ckpt, grads_ckpt = step()
    assert torch.equal(loss, loss_ckpt)
    assert grads.keys() == grads_ckpt.keys() and all(torch.equal(grads[n], grads_ckpt[n]) for n in grads)


# -- pretrained weights through timm ------------------------------------------------------------

@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A trained-looking tiny network saved in this package's safetensors layout (aux head included,
    as ``nasnet train`` writes it)."""
    torch.manual_seed(4)
    source = nb.create_model(TINY, img_size=96)  # the catalogue's config: aux head on
    randomize_batchnorm(source, seed=2)
    path = tmp_path / "tiny.safetensors"
    nb.save_checkpoint(source, path)
    return source, path


def assert_filled_from(model, source, skip=()):
    mine, theirs = model.state_dict(), source.state_dict()
    for key, value in mine.items():
        if key.startswith(skip):
            continue
        assert torch.equal(value, theirs[key]), key


def test_a_local_file_fills_every_tensor(tiny_checkpoint):
    source, path = tiny_checkpoint
    model = timm.create_model(TINY, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert model.pretrained_cfg["file"] == str(path)
    assert_filled_from(model, source)
    five = timm.create_model(TINY, pretrained=True, num_classes=5, pretrained_cfg_overlay=dict(file=str(path)))
    assert_filled_from(five, source, skip=("classifier.",))
    # timm's train.py --pretrained-path: num_classes=-1 forces a fresh classifier
    fresh_head = timm.create_model(TINY, pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=-1))
    assert_filled_from(fresh_head, source, skip=("classifier.",))
    grey = timm.create_model(TINY, pretrained=True, in_chans=1, pretrained_cfg_overlay=dict(file=str(path)))
    assert_filled_from(grey, source, skip=("stem.conv.",))
    torch.testing.assert_close(grey.stem.conv.weight, source.stem.conv.weight.sum(1, keepdim=True))
    features = timm.create_model(TINY, pretrained=True, features_only=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert_filled_from(features.model, source)


def test_a_timm_built_model_saves_and_reloads_with_the_package(tiny_checkpoint, tmp_path):
    """timm replaces pretrained_cfg with a dict; the package's save and load still work on it."""
    source, path = tiny_checkpoint
    model = timm.create_model(TINY, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    again = tmp_path / "again.safetensors"
    nb.save_checkpoint(model, again)
    assert nb.checkpoint.read_metadata(again)["model"] == TINY
    fresh = timm.create_model(TINY)
    nb.load_checkpoint(fresh, again)
    assert_filled_from(fresh, source)


def test_registered_weights_are_found_in_the_weights_dir_or_refused_clearly(tiny_checkpoint, tmp_path, monkeypatch):
    source, path = tiny_checkpoint
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(nb.weights.WEIGHTS_DIR_ENV, raising=False)
    with pytest.raises(WeightsNotFoundError, match=f"{TINY}.{TINY_TAG} are not on this machine"):
        timm.create_model(f"{TINY}.{TINY_TAG}", pretrained=True)
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    (weights_dir / TINY_FILE).write_bytes(path.read_bytes())
    monkeypatch.setenv(nb.weights.WEIGHTS_DIR_ENV, str(weights_dir))
    model = timm.create_model(TINY, pretrained=True)
    assert model.pretrained_cfg["file"] == str(weights_dir / TINY_FILE)
    assert_filled_from(model, source)


def test_a_cadene_checkpoint_loads_through_timm(tmp_path, cadene_mobile):
    path = tmp_path / "nasnetamobile.pth"
    torch.save(cadene_mobile.state_dict(), path)
    model = timm.create_model("nasnet_a_mobile", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = cadene_mobile(x), model(x)
    assert (want - got).abs().max() <= 1e-4 * want.abs().max()


def test_a_checkpoint_of_another_model_is_one_clear_error(tiny_checkpoint):
    _, path = tiny_checkpoint
    with pytest.raises(CheckpointMismatchError, match="does not match model 'nasnet_a_mobile'"):
        timm.create_model("nasnet_a_mobile", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
