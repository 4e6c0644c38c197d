"""The pretrained-weights registry: lookup, hash-checked download, offline errors, fine-tuning,
and the eval preprocessing each entry promises (checked against timm's and Cadene's own)."""

import hashlib
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import nasnet_backbones as nb
from nasnet_backbones import weights as weights_mod
from nasnet_backbones.catalogue import scratch_catalogue
from nasnet_backbones.complexity import count_madds, count_params


@pytest.fixture
def isolated_registry(monkeypatch, tmp_path):
    """A private copy of the weights registry and an empty torch.hub cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(weights_mod.WEIGHTS_DIR_ENV, raising=False)
    with scratch_catalogue():
        yield tmp_path


@pytest.fixture
def published_mobile(cadene_mobile, isolated_registry):
    """Cadene's mobile checkpoint as the publisher serves it, behind a file:// URL, registered."""
    served = isolated_registry / "server" / "nasnetamobile-test.pth"
    served.parent.mkdir()
    torch.save(cadene_mobile.state_dict(), served)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    entry = replace(nb.get_weights("nasnet_a_mobile"), tag="test_in1k", url=served.as_uri(), hash_prefix=digest[:10])
    return nb.register_weights(entry)


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_download_checks_hash_and_gives_the_references_logits(published_mobile, cadene_mobile):
    model = nb.create_model("nasnet_a_mobile.test_in1k", pretrained=True)
    cached = weights_mod.cache_dir() / published_mobile.filename
    assert cached.is_file()
    assert model.pretrained_cfg.weights == published_mobile
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(_logits(model, x), _logits(cadene_mobile, x), atol=1e-5, rtol=1e-4)
    # Second time from the cache; the tag can also be passed as pretrained=.
    again = nb.create_model("nasnet_a_mobile", pretrained="test_in1k")
    torch.testing.assert_close(again.classifier.weight, model.classifier.weight)


def test_registered_weights_are_recorded_in_pretrained_cfg(published_mobile):
    model = nb.create_model("nasnet_a_mobile", pretrained="test_in1k")
    cfg = model.pretrained_cfg
    assert (cfg.architecture, cfg.tag, cfg.name, cfg.weights) == (
        "nasnet_a_4_1056", "test_in1k", "nasnet_a_4_1056.test_in1k", published_mobile)
    assert cfg.checkpoint == str(weights_mod.cache_dir() / published_mobile.filename)
    assert cfg.input_size == 224
    ours, theirs = cfg.transforms(), published_mobile.transforms()
    assert (ours.crop_size, ours.resize_size, ours.interpolation, ours.mean, ours.std) == (
        theirs.crop_size, theirs.resize_size, theirs.interpolation, theirs.mean, theirs.std)


def test_download_with_wrong_hash_keeps_nothing(published_mobile):
    bad = nb.register_weights(replace(published_mobile, tag="bad_hash", hash_prefix="00000000"))
    with pytest.raises(nb.WeightsNotFoundError, match="sha256 does not start with 00000000"):
        nb.create_model("nasnet_a_mobile", pretrained="bad_hash")
    assert not (weights_mod.cache_dir() / bad.filename).exists()
    assert not list(weights_mod.cache_dir().glob("*.partial")) and len(list(weights_mod.cache_dir().iterdir())) == 0


def test_offline_error_names_url_and_destination(isolated_registry, monkeypatch):
    weights = nb.get_weights("nasnet_a_large")
    gone = replace(weights, tag="offline", url=(isolated_registry / "nowhere" / weights.filename).as_uri())
    nb.register_weights(gone)
    monkeypatch.setenv(weights_mod.WEIGHTS_DIR_ENV, str(isolated_registry / "offline_dir"))
    with pytest.raises(nb.WeightsNotFoundError) as info:
        nb.create_model("nasnet_a_large", pretrained="offline")
    message = str(info.value)
    assert gone.url in message and str(weights_mod.cache_dir() / weights.filename) in message
    assert str(isolated_registry / "offline_dir" / weights.filename) in message


def test_weights_dir_env_serves_offline_machines(published_mobile, cadene_mobile, monkeypatch, isolated_registry):
    offline = replace(published_mobile, tag="from_dir", url="http://unreachable.invalid/" + published_mobile.filename)
    nb.register_weights(offline)
    folder = isolated_registry / "weights_dir"
    folder.mkdir()
    torch.save(cadene_mobile.state_dict(), folder / offline.filename)
    monkeypatch.setenv(weights_mod.WEIGHTS_DIR_ENV, str(folder))
    model = nb.create_model("nasnet_a_mobile", pretrained="from_dir")
    torch.testing.assert_close(model.classifier.weight, cadene_mobile.last_linear.weight)


def test_wrong_file_under_the_published_name_is_refused(isolated_registry, tiny_imagenet_model):
    weights = nb.get_weights("nasnet_a_large")
    cached = weights_mod.cache_dir() / weights.filename
    cached.parent.mkdir(parents=True)
    torch.save(tiny_imagenet_model.state_dict(), cached)
    with pytest.raises(ValueError, match=f"not the published {weights.filename}.*{weights.hash_prefix}"):
        nb.create_model("nasnet_a_large", pretrained=True)
    assert cached.is_file()  # the user's file is left alone


def test_other_class_count_keeps_backbone_and_reinitialises_classifier(published_mobile, cadene_mobile, caplog):
    with caplog.at_level(logging.WARNING):
        model = nb.create_model("nasnet_a_mobile", pretrained="test_in1k", num_classes=7)
    assert "re-initialised the classifier" in caplog.text
    assert model.classifier.out_features == 7
    x = torch.randn(1, 3, 224, 224)
    reference = cadene_mobile.features(x)
    torch.testing.assert_close(_logits(model, x).shape, torch.Size([1, 7]))
    with torch.no_grad():
        ours = model.forward_features(x)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


def test_features_only_loads_the_backbone(published_mobile, cadene_mobile):
    model = nb.create_model("nasnet_a_mobile", pretrained="test_in1k", features_only=True).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        deepest = model(x)["stride32"]
        torch.testing.assert_close(deepest, torch.relu(cadene_mobile.features(x)), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_filters=40), "num_filters"),
    (dict(in_chans=1), "in_chans=1"),
    (dict(stem_multiplier=3.0, padding="symmetric"), "padding, stem_multiplier"),
])
def test_arguments_that_contradict_the_weights_fail(published_mobile, kwargs, match):
    with pytest.raises(ValueError, match=match):
        nb.create_model("nasnet_a_mobile", pretrained="test_in1k", **kwargs)


def test_training_settings_are_compatible_with_weights(published_mobile):
    model = nb.create_model("nasnet_a_mobile", pretrained="test_in1k", drop_path_prob=0.1, dropout=0.2)
    assert model.config.drop_path_prob == 0.1 and model.config.dropout == 0.2


def test_conflicting_and_unknown_pretrained_arguments(published_mobile, tmp_path):
    with pytest.raises(ValueError, match="conflicting weights"):
        nb.create_model("nasnet_a_mobile.cadene_in1k", pretrained="test_in1k")
    with pytest.raises(ValueError, match="pass pretrained=True"):
        nb.create_model("nasnet_a_mobile.cadene_in1k")
    with pytest.raises(ValueError, match="unknown weights tag 'nope'.*nasnet_a_4_1056.cadene_in1k"):
        nb.create_model("nasnet_a_mobile.nope", pretrained=True)
    with pytest.raises(FileNotFoundError, match="neither a weights tag.*nor an existing file"):
        nb.create_model("nasnet_a_mobile", pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="no pretrained weights are registered for 'darts_v2_cifar'"):
        nb.create_model("darts_v2_cifar", pretrained=True)


def test_registry_lists_the_issue_weights():
    assert nb.list_weights("nasnet_a_mobile") == ["nasnet_a_4_1056.cadene_in1k"]
    assert nb.list_weights("nasnet_a_large") == ["nasnet_a_6_4032.tf_in1k", "nasnet_a_6_4032.cadene_in1k"]
    assert nb.list_weights("pnasnet_5_large") == ["pnasnet_5_large.tf_in1k"]
    for name in nb.list_weights():
        w = nb.get_weights(*name.split("."))
        assert w.hash_prefix and w.hash_prefix in w.filename, "torch.hub names files after their sha256"
        assert w.layout in nb.convert.LAYOUTS and w.checkpoint_classes in (1000, 1001)
        assert 70 < w.published_top1 < w.published_top5 < 100


def test_mobile_entry_figures_are_measured():
    w = nb.get_weights("nasnet_a_mobile")
    model = nb.create_model("nasnet_a_mobile")
    assert count_params(model) == w.params
    assert count_madds(model, w.input_size) == w.mult_adds


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["nasnet_a_large", "pnasnet_5_large"])
def test_large_entry_params_are_measured(model_name):
    assert count_params(nb.create_model(model_name)) == nb.get_weights(model_name).params


def _photo(h=300, w=400):
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_transforms_match_timm_eval_preprocessing():
    timm = pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config

    for ours, theirs in [("nasnet_a_large", "nasnetalarge.tf_in1k"), ("pnasnet_5_large", "pnasnet5large.tf_in1k")]:
        cfg = resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(theirs).to_dict())
        img = _photo()
        torch.testing.assert_close(nb.get_weights(ours).transforms()(img), create_transform(**cfg)(img), atol=0, rtol=0)


def test_transforms_match_cadene_eval_preprocessing():
    utils = pytest.importorskip("pretrainedmodels.utils")
    from pretrainedmodels.models.nasnet import pretrained_settings as large
    from pretrainedmodels.models.nasnet_mobile import pretrained_settings as mobile

    for tag, settings in [("nasnet_a_mobile.cadene_in1k", mobile["nasnetamobile"]["imagenet"]),
                          ("nasnet_a_large.cadene_in1k", large["nasnetalarge"]["imagenet"])]:
        opts = type("Opts", (), settings)
        img = _photo(250, 180)
        ours = nb.get_weights(*tag.split(".")).transforms()(img)
        torch.testing.assert_close(ours, utils.TransformImage(opts)(img), atol=0, rtol=0)


def test_transforms_accept_tensors():
    t = nb.get_weights("nasnet_a_mobile").transforms()
    x = torch.randint(0, 256, (3, 300, 260), dtype=torch.uint8)
    out = t(x)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    assert -1.0 <= out.min() and out.max() <= 1.0


def test_unwritable_cache_is_a_clear_error(isolated_registry, monkeypatch):
    blocker = isolated_registry / "a_file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("TORCH_HOME", str(blocker / "torch"))
    with pytest.raises(nb.WeightsNotFoundError, match="cannot create torch.hub's cache.*TORCH_HOME"):
        nb.create_model("nasnet_a_mobile", pretrained=True)


def test_unknown_argument_is_reported_as_unknown_even_with_weights(published_mobile):
    with pytest.raises(TypeError, match="unknown argument.*dropout_rate"):
        nb.create_model("nasnet_a_mobile", pretrained="test_in1k", dropout_rate=0.1)


def test_weights_object_must_match_the_tag_in_the_name(published_mobile):
    with pytest.raises(ValueError, match="do not match"):
        nb.create_model("nasnet_a_mobile.cadene_in1k", pretrained=published_mobile)


def test_1001_class_model_keeps_a_1001_class_head(cadene_mobile, tmp_path):
    state = dict(cadene_mobile.state_dict())
    state["last_linear.weight"] = torch.randn(1001, 1056)
    state["last_linear.bias"] = torch.randn(1001)
    torch.save(state, tmp_path / "with_background.pth")
    model = nb.create_model("nasnet_a_mobile", pretrained=tmp_path / "with_background.pth", num_classes=1001)
    torch.testing.assert_close(model.classifier.weight, state["last_linear.weight"])


def test_transforms_handle_unusual_inputs():
    t = nb.get_weights("nasnet_a_mobile").transforms()
    deep = Image.fromarray(np.full((240, 240), 65535 // 2, dtype=np.uint16))  # a 16-bit PNG's mode
    assert abs(float(t(deep).mean())) < 0.02  # mid-grey, not clipped to white
    clear = Image.new("RGBA", (240, 240), (0, 0, 0, 0))  # transparent: composited on white
    assert float(t(clear).min()) == pytest.approx(1.0)
    grey = torch.full((2, 1, 240, 240), 255, dtype=torch.uint8)
    assert t(grey).shape == (2, 3, 224, 224)
    with pytest.raises(ValueError, match="channels last"):
        t(torch.zeros(240, 240, 3, dtype=torch.uint8))
