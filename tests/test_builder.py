"""The one builder and the record it leaves on every model (``NASNet.pretrained_cfg``), and the
catalogue's mechanism apart from its data."""

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

import nasnet_backbones as nb
from nasnet_backbones import genotypes
from nasnet_backbones.catalogue import scratch_catalogue
from nasnet_backbones.checkpoint import read_metadata
from nasnet_backbones.model_args import eval_transform_for

PACKAGE = Path(nb.__file__).parent


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_registered_model_records_its_name_size_and_default_preprocessing():
    model = nb.create_model("nasnet_a_mobile")
    cfg = model.pretrained_cfg
    assert isinstance(cfg, nb.PretrainedCfg)
    assert (cfg.architecture, cfg.input_size, cfg.weights, cfg.tag, cfg.checkpoint) == ("nasnet_a_4_1056", 224, None,
                                                                                      None, None)
    published = nb.get_weights("nasnet_a_mobile")  # random weights, but the default weights' preprocessing
    assert (cfg.crop_size, cfg.resize_size, cfg.interpolation) == (224, published.resize_size, "bilinear")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.architecture = "other"


def test_genotype_builds_n_at_f_and_records_it(tmp_path):
    torch.manual_seed(0)
    model = nb.build_model(genotypes.NASNET_A, cells=1, filters=8, stem="cifar", img_size=32)
    torch.manual_seed(0)
    direct = nb.build_nasnet(genotypes.NASNET_A, num_cells=3, num_filters=8, stem="cifar", num_classes=10, img_size=32)
    assert model.config == direct.config and _same_weights(model, direct)  # 3 stacks of N=1
    cfg = model.pretrained_cfg
    assert (cfg.architecture, cfg.input_size, cfg.weights, cfg.genotype_file) == ("NASNet-A 1@192", 32, None, None)
    assert (cfg.crop_size, cfg.resize_size, tuple(cfg.mean)) == (32, 32, nb.transforms.CIFAR10_MEAN)
    assert direct.pretrained_cfg is None  # built directly: no record

    unnamed = nb.Genotype(genotypes.NASNET_A.normal, genotypes.NASNET_A.reduce)
    path = tmp_path / "my_cell.json"
    unnamed.to_json(path)
    from_file = nb.build_model(path, cells=2, filters=4)
    assert from_file.config.num_cells == 6 and from_file.config.stem == "imagenet" and from_file.num_classes == 1000
    cfg = from_file.pretrained_cfg
    assert (cfg.architecture, cfg.genotype_file) == ("my_cell 2@96", str(path))
    assert cfg.input_size == 224
    with pytest.raises(ValueError, match="pretrained weights exist for registered models only"):
        nb.build_model(genotypes.NASNET_A, cells=1, filters=8, pretrained=True)


def test_models_loaded_from_a_file_record_it(tmp_path):
    torch.manual_seed(0)
    trained = nb.build_model(genotypes.NASNET_A, cells=1, filters=8, stem="cifar", img_size=32)
    nb.save_checkpoint(trained, tmp_path / "cell.safetensors")
    loaded = nb.build_model(genotypes.NASNET_A, cells=1, filters=8, stem="cifar", img_size=32,
                            pretrained=tmp_path / "cell.safetensors")
    assert _same_weights(loaded, trained)
    assert loaded.pretrained_cfg.checkpoint == str(tmp_path / "cell.safetensors")
    assert loaded.pretrained_cfg.weights is None
    assert read_metadata(tmp_path / "cell.safetensors")["model"] == "NASNet-A 1@192"

    registered = nb.create_model("nasnet_a_cifar_6_768")
    torch.save(registered.state_dict(), tmp_path / "cifar.pth")
    again = nb.build_model("nasnet_a_cifar_6_768", pretrained=tmp_path / "cifar.pth")
    assert _same_weights(again, registered)
    cfg = again.pretrained_cfg
    assert (cfg.architecture, cfg.checkpoint, cfg.weights, cfg.input_size) == (
        "nasnet_a_cifar_6_768", str(tmp_path / "cifar.pth"), None, 32)
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        nb.build_model(genotypes.NASNET_A, cells=1, filters=8, pretrained=tmp_path / "missing.pth")


def test_eval_transform_follows_the_record():
    cifar = nb.build_model(genotypes.NASNET_A, cells=1, filters=8, stem="cifar", img_size=32)
    default = eval_transform_for(cifar)
    assert default.crop_size == 32 and default.mean == list(nb.transforms.CIFAR10_MEAN)
    assert (eval_transform_for(cifar, 64).crop_size, eval_transform_for(cifar, 64).resize_size) == (64, 64)
    tiny = nb.build_model(genotypes.NASNET_A, cells=1, filters=8, img_size=96)
    assert (eval_transform_for(tiny).crop_size, eval_transform_for(tiny).resize_size) == (224, 256)
    assert (eval_transform_for(tiny, 96).crop_size, eval_transform_for(tiny, 96).resize_size) == (96, 109)


def test_scratch_catalogue_forgets_registrations():
    entry = nb.get_model_entry("nasnet_a_mobile")
    with scratch_catalogue():
        nb.register_model(dataclasses.replace(entry, name="my_mobile"), aliases=("mine",))
        nb.register_weights(dataclasses.replace(nb.get_weights("nasnet_a_mobile"), model="my_mobile"))
        assert nb.get_model_entry("mine").name == "my_mobile" and nb.list_weights("my_mobile")
    assert "my_mobile" not in nb.list_models() and "mine" not in nb.list_models()
    with pytest.raises(ValueError, match="unknown model 'my_mobile'"):
        nb.list_weights("my_mobile")


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names |= {node.module} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nasnet_backbones"):
            names.add(node.module.split(".", 1)[-1])
    return names


def test_catalogue_mechanism_imports_no_data_and_weights_no_catalogue():
    assert not _imported_modules(PACKAGE / "weights.py") & {"catalogue", "zoo", "builder", "registry"}
    assert not _imported_modules(PACKAGE / "catalogue.py") & {"zoo", "builder"}
    assert "catalogue" in _imported_modules(PACKAGE / "zoo.py")
