"""torch.hub serves every registered model from hubconf.py: listed, documented, loadable, with
registered weights found in torch.hub's cache and hash-checked, all through torch.hub itself.

``torch.hub.load(dir, name, source="local")`` reads a checkout; ``torch.hub.list`` and
``torch.hub.help`` read GitHub repositories only, so they are given one the way torch.hub keeps a
downloaded one: a folder ``OWNER_REPO_BRANCH`` in its hub directory (here a link to this checkout),
which torch.hub uses without going online.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

import nasnet_backbones as nb
from nasnet_backbones.catalogue import scratch_catalogue
from nasnet_backbones.weights import WEIGHTS_DIR_ENV, cache_dir

from not_installed import ROOT, non_base_modules, run_python

SMALL = {"nasnet_a_cifar_6_768": (32, 10), "darts_v2_cifar": (32, 10)}  # the registry's smallest: input, classes


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch.hub directory and weights cache of the test's own."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    return tmp_path / "torch_home"


@pytest.fixture
def hub_repo(torch_home):
    """``owner/nasnet-backbones:main`` as torch.hub finds it after a download: this checkout."""
    hub_dir = torch_home / "hub"
    hub_dir.mkdir(parents=True)
    (hub_dir / "nasnet-backbones-dev_nasnet-backbones_main").symlink_to(ROOT, target_is_directory=True)
    return "nasnet-backbones-dev/nasnet-backbones:main"


def test_every_registered_model_is_an_entry(hub_repo):
    entries = torch.hub.list(hub_repo, verbose=False)
    assert entries == sorted(nb.list_models()) and "nasnet_a_mobile" in entries and "nasnet_a_6_4032" in entries


def test_help_documents_the_architecture_and_its_weights(hub_repo):
    large = torch.hub.help(hub_repo, "nasnet_a_large")
    assert "NASNet-A (6 @ 4032) ImageNet 331x331" in large and "alias of ``nasnet_a_6_4032``" in large
    assert "``tf_in1k`` (default): 82.63 top-1 at 331 px, nasnetalarge-dc4a7b8b.pth" in large
    assert "``cadene_in1k``" in large and "sha256 checked" in large and "88.9M parameters" in large
    cifar = torch.hub.help(hub_repo, "darts_v2_cifar")
    assert "DARTS" in cifar and "10 classes" in cifar and "no registered weights" in cifar
    for name in nb.list_models():  # every entry: its own description, the weights tags it can load
        doc = torch.hub.help(hub_repo, name)
        entry = nb.get_model_entry(name)
        assert doc.startswith(entry.description) and f"{entry.img_size}x{entry.img_size} input" in doc
        assert all(f"``{w.split('.', 1)[1]}``" in doc for w in nb.list_weights(name)), name


@pytest.mark.parametrize("name", sorted(SMALL))
def test_load_builds_the_model(name, torch_home):
    size, classes = SMALL[name]
    torch.manual_seed(0)
    model = torch.hub.load(str(ROOT), name, source="local", pretrained=False).eval()
    assert isinstance(model, nb.NASNet) and model.pretrained_cfg.architecture == name
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, classes)
    # keyword arguments are create_model's
    features = torch.hub.load(str(ROOT), name, source="local", features_only=True, num_classes=3).eval()
    with torch.no_grad():
        maps = features(torch.randn(1, 3, size, size))
    maps = list(maps.values()) if isinstance(maps, dict) else list(maps)  # {stride name: map} or timm's list
    assert [m.shape[1] for m in maps] == [c["num_chs"] for c in features.feature_info] and len(maps) >= 3
    with pytest.raises(TypeError, match="unknown argument"):
        torch.hub.load(str(ROOT), name, source="local", not_an_option=1)


@pytest.fixture
def cached_weights(torch_home):
    """Weights registered for nasnet_a_cifar_6_768 (a tag of the test's own) whose file lies in
    torch.hub's cache, as after a download; the URL points nowhere, so nothing may be fetched."""
    torch.manual_seed(1)
    trained = nb.create_model("nasnet_a_cifar_6_768")
    with torch.no_grad():  # BatchNorm statistics away from their initial values
        for module in trained.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    template = nb.get_weights("nasnet_a_mobile")
    with scratch_catalogue():
        filename = "nasnet_a_cifar_6_768-hubtest.safetensors"
        cache_dir().mkdir(parents=True)
        nb.save_checkpoint(trained, cache_dir() / filename)
        digest = hashlib.sha256((cache_dir() / filename).read_bytes()).hexdigest()
        weights = nb.register_weights(replace(
            template, model="nasnet_a_cifar_6_768", tag="hubtest", url=f"http://127.0.0.1:9/{filename}",
            hash_prefix=digest[:10], layout="nasnet_backbones", checkpoint_classes=10, num_classes=10,
            input_size=32, crop_pct=1.0, mirrors=()))
        yield weights


def test_pretrained_loads_the_registered_weights_from_the_cache(cached_weights):
    stored = load_file(str(cache_dir() / cached_weights.filename))
    for pretrained in (True, "hubtest"):
        model = torch.hub.load(str(ROOT), "nasnet_a_cifar_6_768", source="local", pretrained=pretrained)
        state = model.state_dict()
        assert set(stored) <= set(state) and len(stored) > 100
        assert all(torch.equal(state[key], tensor) for key, tensor in stored.items())
        assert model.pretrained_cfg.tag == "hubtest"
    random = torch.hub.load(str(ROOT), "nasnet_a_cifar_6_768", source="local").state_dict()
    assert not all(torch.equal(random[key], tensor) for key, tensor in stored.items())


def test_pretrained_refuses_a_cached_file_whose_hash_differs(cached_weights):
    nb.register_weights(replace(cached_weights, tag="other_hash", hash_prefix="00000000"))
    with pytest.raises(ValueError, match="sha256 does not start with 00000000"):
        torch.hub.load(str(ROOT), "nasnet_a_cifar_6_768", source="local", pretrained="other_hash")


def test_hubconf_needs_the_base_install_only(tmp_path):
    """torch.hub imports hubconf with every package outside the base unimportable, checks its
    ``dependencies`` and builds a model; nothing above the model floor is imported."""
    code = """
import json, sys, torch
model = torch.hub.load(sys.argv[1], "darts_v2_cifar", source="local").eval()
with torch.no_grad():
    shape = list(model(torch.zeros(1, 3, 32, 32)).shape)
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"detection", "export", "search", "detectron2", "onnx", "ray", "timm"})
print(json.dumps([shape, loaded]))
"""
    done = run_python(code, blocked=non_base_modules(), args=(str(ROOT),))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[1, 10], []]
    assert "Warning" not in done.stderr, done.stderr[-3000:]
