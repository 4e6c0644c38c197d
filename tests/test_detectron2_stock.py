"""detectron2's own tools with this package and nothing of its engine in between: the stock
``get_cfg``, ``DefaultTrainer``, ``DetectionCheckpointer`` (``nasnet://`` ImageNet initialisation,
classification files given by their plain path), ``LazyConfig`` + ``instantiate`` and
``SimpleTrainer`` (issue 16 item 1); gradient checkpointing and mixed precision of the NASNet
backbones (the detectron2 half of item 7)."""

import hashlib
import os
import warnings
from dataclasses import replace

import pytest
import torch

detectron2 = pytest.importorskip("detectron2")

with warnings.catch_warnings():  # fvcore's import calls the deprecated torch.jit.script; not ours to change
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import LazyConfig, get_cfg, instantiate
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances
    from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, hooks
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage
    from detectron2.utils.file_io import PathManager

    import detection
    from detection.backbone import NASNetBackbone, NASNetC4Head
    from detection.checkpoint import NASNetDetectionCheckpointer, PickleWeightsRefused
    from detection.config import add_nasnet_config, register_nasnet_defaults
    from detection.model_zoo import get_lazy_config, list_lazy_configs

import nasnet_backbones as nb  # noqa: E402
from helpers import randomize_batchnorm  # noqa: E402
from nasnet_backbones import build_nasnet, genotypes, save_checkpoint  # noqa: E402
from nasnet_backbones.catalogue import scratch_catalogue  # noqa: E402
from nasnet_backbones.convert import convert_state_dict  # noqa: E402
from nasnet_backbones.weights import WEIGHTS_DIR_ENV, cache_dir  # noqa: E402
from detection.synthetic import make_synthetic  # noqa: E402

_HEAD = ("classifier.", "aux_head.")
_LARGE = ("nasnet_a_large",)


# -- fixtures and helpers ---------------------------------------------------------------------

@pytest.fixture(autouse=True)
def private_torch_home(tmp_path, monkeypatch):
    """Converted and registered weights go to a private torch.hub cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)


def _tiny_classifier(filters: int = 8, seed: int = 0) -> torch.nn.Module:
    """NASNet-A, one normal cell per stack, ImageNet stem, with non-trivial BN statistics."""
    torch.manual_seed(seed)
    network = build_nasnet(genotypes.NASNET_A, num_cells=3, num_filters=filters, stem="imagenet", num_classes=1000)
    randomize_batchnorm(network, seed)
    return network.eval()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A tiny classification network and its checkpoint as .safetensors and as a .pth state dict."""
    folder = tmp_path_factory.mktemp("classifier")
    network = _tiny_classifier()
    save_checkpoint(network, folder / "tiny.safetensors")
    torch.save(network.state_dict(), folder / "tiny.pth")
    return network, folder / "tiny.safetensors", folder / "tiny.pth"


@pytest.fixture(scope="module")
def synthetic_train(tmp_path_factory):
    """The package's synthetic shapes dataset, registered with detectron2's own COCO loader."""
    root = tmp_path_factory.mktemp("synthetic")
    files = make_synthetic(root, num_images=5, size=64)
    name = "stock_tools_synthetic_train"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, str(files["train"]), str(root / "train"))
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def stock_cfg(name: str, genotype_file=None, filters: int = 8):
    """detectron2's own get_cfg() with a shipped YAML merged by its own merge_from_file, on the CPU,
    small; with ``genotype_file`` the tiny network of :func:`_tiny_classifier`."""
    cfg = get_cfg()
    cfg.merge_from_file(detection.get_config_file(name))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    if genotype_file is not None:
        cfg.MODEL.NASNET.GENOTYPE, cfg.MODEL.NASNET.CELLS, cfg.MODEL.NASNET.FILTERS = str(genotype_file), 1, filters
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 100
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 20
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = cfg.MODEL.RETINANET.NUM_CLASSES = 3
    return cfg


def nasnet_bodies(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m.body for m in model.modules() if isinstance(m, (NASNetBackbone, NASNetC4Head))]


def assert_backbone_is(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> int:
    """Every tensor of the detector's NASNet bodies equals ``expected`` (classification names),
    and together they hold every tensor of ``expected``; returns how many were compared."""
    seen, mismatched = set(), []
    for body in nasnet_bodies(model):
        for key, value in body.state_dict().items():
            assert key not in seen, f"{key} in two NASNet bodies"
            seen.add(key)
            if key not in expected or not torch.equal(value, expected[key].to(value.dtype)):
                mismatched.append(key)
    assert mismatched == [], f"{len(mismatched)} backbone tensors differ from the checkpoint, e.g. {mismatched[:3]}"
    assert seen == set(expected), f"checkpoint tensors not in the detector: {sorted(set(expected) - seen)[:3]}"
    assert len(seen) > 0
    return len(seen)


def backbone_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(_HEAD)}


# -- 1. detectron2's get_cfg and the shipped YAML configs -----------------------------------

def test_stock_get_cfg_knows_the_nasnet_keys():
    ours = add_nasnet_config(get_cfg().clone()).MODEL.NASNET
    stock = get_cfg()
    assert "NASNET" in stock.MODEL and set(stock.MODEL.NASNET) == set(ours) >= {"ARCH", "GRAD_CHECKPOINTING"}
    register_nasnet_defaults()  # again: nothing changes
    assert get_cfg().dump() == stock.dump()
    stock.MODEL.NASNET.ARCH = "pnasnet_5_large"
    assert add_nasnet_config(stock).MODEL.NASNET.ARCH == "pnasnet_5_large"  # values already there are kept
    stock.merge_from_list(["MODEL.NASNET.GRAD_CHECKPOINTING", "True"])  # tools/train_net.py's opts path
    assert stock.MODEL.NASNET.GRAD_CHECKPOINTING is True


@pytest.mark.parametrize("name", detection.list_configs())
def test_every_shipped_yaml_merges_into_stock_get_cfg(name):
    stock = get_cfg()
    stock.merge_from_file(detection.get_config_file(name))  # what tools/train_net.py's setup does
    assert stock.dump() == detection.get_config(name).dump()
    assert stock.MODEL.WEIGHTS.startswith("nasnet://")


# -- 2. detectron2's DefaultTrainer, ImageNet-initialised through nasnet:// ------------------

def test_stock_default_trainer_starts_from_nasnet_path_and_trains(classifier, synthetic_train, genotype_file,
                                                                  tmp_path):
    network, safetensors, _ = classifier
    cfg = stock_cfg("faster_rcnn_nasnet_a_mobile_FPN_1x", genotype_file)
    cfg.MODEL.WEIGHTS = f"nasnet://{safetensors}"  # nasnet:///absolute/path
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (synthetic_train,), ()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 96
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR = 2, 1, 0.01
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.STEPS, cfg.SOLVER.CHECKPOINT_PERIOD = 0, (), 100
    cfg.OUTPUT_DIR = str(tmp_path / "run")
    trainer = DefaultTrainer(cfg)
    assert isinstance(trainer.checkpointer, DetectionCheckpointer)
    assert not isinstance(trainer.checkpointer, NASNetDetectionCheckpointer)
    trainer.resume_or_load(resume=False)
    expected = backbone_part(network.state_dict())
    assert assert_backbone_is(trainer.model, expected) == len(expected)

    trainer.train()
    assert trainer.iter == 1 and trainer.storage.iter == 1
    assert torch.isfinite(torch.tensor(trainer.storage.history("total_loss").latest()))
    trained = trainer.model.state_dict()
    body = nasnet_bodies(trainer.model)[0]
    moved = [k for k, p in body.named_parameters() if p.requires_grad and not torch.equal(p, expected[k])]
    assert moved, "one SGD step changed the trainable backbone weights"
    # the run's checkpoint resumes through the stock checkpointer (a detector checkpoint: no conversion)
    again = build_model(stock_cfg("faster_rcnn_nasnet_a_mobile_FPN_1x", genotype_file))
    DetectionCheckpointer(again).load(str(tmp_path / "run" / "model_final.pth"))
    for key, value in again.state_dict().items():
        torch.testing.assert_close(value, trained[key], atol=0, rtol=0, msg=key)


def test_stock_checkpointer_reads_registered_weights(cadene_mobile, tmp_path):
    """nasnet://NAME.TAG: registered weights (Cadene's layout) found in torch.hub's cache."""
    published = tmp_path / "nasnetamobile-stocktest.pth"
    torch.save(cadene_mobile.state_dict(), published)
    digest = hashlib.sha256(published.read_bytes()).hexdigest()
    with scratch_catalogue():
        entry = replace(nb.get_weights("nasnet_a_mobile"), tag="stock_test", url="https://example.invalid/"
                        + published.name, hash_prefix=digest[:10], mirrors=())
        nb.register_weights(entry)
        cache_dir().mkdir(parents=True)
        (cache_dir() / published.name).write_bytes(published.read_bytes())  # as if downloaded before
        cfg = stock_cfg("faster_rcnn_nasnet_a_mobile_FPN_1x")
        model = build_model(cfg)
        DetectionCheckpointer(model).load("nasnet://nasnet_a_mobile.stock_test")
    reference = nb.build_model("nasnet_a_mobile", num_classes=0, aux_head=False)
    expected = convert_state_dict(reference, cadene_mobile.state_dict(), skip_head=True)
    assert assert_backbone_is(model, backbone_part(expected)) == len(backbone_part(expected))


def test_stock_and_own_checkpointer_fill_the_c4_model_alike(classifier, genotype_file, tmp_path, monkeypatch):
    """The C4 split: the trunk's and the box head's cells, from nasnet://relative/path (.pth)."""
    network, _, pth = classifier
    monkeypatch.chdir(pth.parent)
    cfg = stock_cfg("faster_rcnn_nasnet_a_large_C4_1x", genotype_file)
    torch.manual_seed(1)
    stock = build_model(cfg)
    DetectionCheckpointer(stock).load(f"nasnet://{pth.name}")
    assert len(nasnet_bodies(stock)) == 2
    assert_backbone_is(stock, backbone_part(network.state_dict()))
    torch.manual_seed(1)
    own = build_model(cfg)
    NASNetDetectionCheckpointer(own, cfg=cfg).load(str(pth))  # the package's checkpointer, plain path
    for key, value in own.state_dict().items():
        torch.testing.assert_close(value, stock.state_dict()[key], atol=0, rtol=0, msg=key)


@pytest.mark.parametrize("layout", ["nasnet_backbones", "cadene"])
def test_classification_file_by_plain_path_is_refused_by_the_stock_checkpointer(layout, classifier, cadene_mobile,
                                                                                 genotype_file, tmp_path):
    if layout == "cadene":
        path = tmp_path / "nasnetamobile.pth"
        torch.save(cadene_mobile.state_dict(), path)
        cfg = stock_cfg("faster_rcnn_nasnet_a_mobile_FPN_1x")
    else:
        path = classifier[2]
        cfg = stock_cfg("faster_rcnn_nasnet_a_mobile_FPN_1x", genotype_file)
    model = build_model(cfg)
    with pytest.raises(ValueError, match=r"none of the \d+ tensors of backbone.bottom_up were loaded.*nasnet://PATH"):
        DetectionCheckpointer(model).load(str(path))


def test_nasnet_weights_of_another_architecture_are_refused(classifier, genotype_file):
    _, safetensors, _ = classifier
    model = build_model(stock_cfg("retinanet_nasnet_a_mobile_FPN_1x", genotype_file, filters=16))
    with pytest.raises(ValueError, match="another architecture than MODEL.NASNET describes"):
        DetectionCheckpointer(model).load(f"nasnet://{safetensors}")


def test_nasnet_paths_are_checked_and_converted_once(classifier, tmp_path, monkeypatch):
    network, safetensors, _ = classifier
    converted = PathManager.get_local_path(f"nasnet://{safetensors}")
    mtime = os.stat(converted).st_mtime_ns
    assert PathManager.get_local_path(f"nasnet:{safetensors}") == converted  # detectron2's urlparse spelling
    assert os.stat(converted).st_mtime_ns == mtime  # reused, not written again
    saved = torch.load(converted, map_location="cpu", weights_only=True)  # a plain state dict file
    assert saved["matching_heuristics"] is True and saved["__author__"] == "nasnet_backbones"
    assert set(saved["model"]) == set(backbone_part(network.state_dict()))

    with pytest.raises(FileNotFoundError, match="nowhere/tiny.pth does not exist"):
        PathManager.get_local_path("nasnet://nowhere/tiny.pth")
    with pytest.raises(ValueError, match="not_a_model"):
        PathManager.get_local_path("nasnet://not_a_model")
    (tmp_path / "zoo.pkl").write_bytes(b"not read")
    with pytest.raises(PickleWeightsRefused, match="never loads"):
        PathManager.get_local_path(f"nasnet://{tmp_path / 'zoo.pkl'}")
    torch.save({"model": {"backbone.x": torch.zeros(1)}}, tmp_path / "detector.pth")
    with pytest.raises(ValueError, match="holds? a detector"):
        PathManager.get_local_path(f"nasnet://{tmp_path / 'detector.pth'}")


# -- 3. LazyConfigs: detectron2's LazyConfig.load, instantiate and SimpleTrainer ----------------

def _lazy_params():
    return [pytest.param(n, marks=pytest.mark.slow) if any(a in n for a in ("large",)) else n
            for n in list_lazy_configs()]


def test_every_yaml_config_has_a_lazy_twin():
    assert [n[:-3] for n in list_lazy_configs()] == [n[:-5] for n in detection.list_configs()]


@pytest.mark.parametrize("name", _lazy_params())
def test_lazy_config_builds_the_yaml_model(name):
    """instantiate(model) builds the same network, tensor for tensor (names and shapes), as the YAML
    twin through build_model; on the meta device, so the large ones cost no memory."""
    cfg = LazyConfig.load(detection.get_lazy_config_file(name))  # detectron2's own loader, the file's path
    assert cfg.train.init_checkpoint.startswith("nasnet://") and cfg.model.input_format == "RGB"
    assert set(cfg) >= {"model", "dataloader", "optimizer", "lr_multiplier", "train"}
    yaml_cfg = get_cfg()
    yaml_cfg.merge_from_file(detection.get_config_file(name[:-3]))
    yaml_cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        lazy, built = instantiate(cfg.model), build_model(yaml_cfg)
    assert type(lazy) is type(built)
    assert {k: v.shape for k, v in lazy.state_dict().items()} == {k: v.shape for k, v in built.state_dict().items()}


def _tiny_lazy(name: str, genotype_file):
    cfg = get_lazy_config(name)
    network = cfg.model.backbone.bottom_up.model
    network.update(genotype=str(genotype_file), cells=1, filters=8)
    for key, value in {"pre_nms_topk": (100, 100), "post_nms_topk": (20, 20)}.items():
        if "proposal_generator" in cfg.model:
            cfg.model.proposal_generator[key] = value
    if "roi_heads" in cfg.model:
        cfg.model.roi_heads.batch_size_per_image = 16
        cfg.model.roi_heads.num_classes = 3
    else:
        cfg.model.num_classes = 3
    return cfg


def _batch(h=64, w=96):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor([[8.0, 10, 40, 50], [30, 20, 90, 60]]))
    inst.gt_classes = torch.tensor([0, 2])
    torch.manual_seed(5)
    return [{"image": torch.randint(0, 255, (3, h, w)).float(), "height": h, "width": w, "instances": inst}]


@pytest.mark.parametrize("name", ["faster_rcnn_nasnet_a_mobile_FPN_1x.py", "retinanet_nasnet_a_mobile_FPN_1x.py"])
def test_lazy_config_computes_what_its_yaml_twin_computes(name, genotype_file):
    """Same weights in: the same detections in eval mode and the same losses in training (same seed),
    so anchors, thresholds, sampling sizes, pixel statistics and channel order agree."""
    lazy = instantiate(_tiny_lazy(name, genotype_file).model)
    built = build_model(stock_cfg(name[:-3], genotype_file))
    lazy.load_state_dict(built.state_dict())
    for model in (lazy, built):
        model.eval()
    with torch.no_grad():
        a, b = lazy(_batch())[0]["instances"], built(_batch())[0]["instances"]
    assert a.image_size == b.image_size == (64, 96)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)
    torch.testing.assert_close(a.scores, b.scores)
    losses = []
    for model in (lazy, built):
        model.train()
        torch.manual_seed(3)
        with EventStorage(0):
            losses.append({k: v.item() for k, v in model(_batch()).items()})
    assert losses[0] == losses[1] and all(torch.isfinite(torch.tensor(v)) for v in losses[0].values())


def test_lazy_config_trains_one_iteration_with_stock_simple_trainer(classifier, synthetic_train, genotype_file):
    """What lazyconfig_train_net.py's do_train does, by hand: instantiate the model, data loader and
    optimizer, load train.init_checkpoint with detectron2's checkpointer, run SimpleTrainer."""
    network, safetensors, _ = classifier
    cfg = _tiny_lazy("mask_rcnn_nasnet_a_mobile_FPN_1x.py", genotype_file)
    cfg.model.roi_heads.mask_head.num_classes = 3
    cfg.train.init_checkpoint = f"nasnet://{safetensors}"
    cfg.train.device = "cpu"
    cfg.dataloader.train.dataset.names = synthetic_train
    cfg.dataloader.train.total_batch_size = 2
    cfg.dataloader.train.num_workers = 0
    cfg.dataloader.train.mapper.augmentations[0].short_edge_length = (64,)
    cfg.dataloader.train.mapper.instance_mask_format = "bitmask"  # the synthetic masks are RLE
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    loader = instantiate(cfg.dataloader.train)
    DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
    expected = backbone_part(network.state_dict())
    assert assert_backbone_is(model, expected) == len(expected)
    trainer = SimpleTrainer(model, loader, optimizer)
    trainer.train(0, 1)
    assert trainer.iter == 1 and {"loss_mask", "loss_cls", "loss_rpn_cls"} <= set(trainer.storage.histories())



# -- 4. memory: gradient checkpointing ----------------------------------------------------------

def _saved_activation_bytes(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward pass of ``module(x)``."""
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(saved)


@pytest.mark.parametrize("name, norm", [("faster_rcnn_nasnet_a_mobile_FPN_1x", "FrozenBN"),
                                        ("faster_rcnn_nasnet_a_large_C4_1x", "BN")])
def test_grad_checkpointing_key_keeps_less_and_computes_the_same(name, norm, genotype_file):
    """MODEL.NASNET.GRAD_CHECKPOINTING: the backbone keeps a fraction of its activations for the
    backward pass, and one training step gives the same losses, gradients and BatchNorm statistics
    as without it (same seed; no drop path)."""
    runs = []
    for enable in (False, True):
        cfg = stock_cfg(name, genotype_file)
        cfg.MODEL.NASNET.GRAD_CHECKPOINTING, cfg.MODEL.NASNET.NORM = enable, norm
        cfg.MODEL.BACKBONE.FREEZE_AT = 0
        torch.manual_seed(0)
        model = build_model(cfg).train()
        assert all(body.grad_checkpointing is enable for body in nasnet_bodies(model))
        torch.manual_seed(3)
        with EventStorage(0):
            losses = model(_batch())
        sum(losses.values()).backward()
        grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
        buffers = {k: b.clone() for k, b in model.named_buffers() if "running_" in k}
        kept = _saved_activation_bytes(model.backbone, torch.randn(2, 3, 64, 96))
        runs.append((kept, {k: v.item() for k, v in losses.items()}, grads, buffers))
    (kept_off, losses_off, grads_off, stats_off), (kept_on, losses_on, grads_on, stats_on) = runs
    assert kept_on < 0.5 * kept_off, (kept_on, kept_off)
    assert losses_on == losses_off
    assert grads_on.keys() == grads_off.keys() and any(".body." in k for k in grads_on)
    for key, grad in grads_off.items():
        torch.testing.assert_close(grads_on[key], grad, atol=0, rtol=0, msg=key)
    for key, value in stats_off.items():
        torch.testing.assert_close(stats_on[key], value, atol=0, rtol=0, msg=key)


def test_lazy_configs_take_grad_checkpointing(genotype_file):
    cfg = _tiny_lazy("faster_rcnn_nasnet_a_mobile_FPN_1x.py", genotype_file)
    cfg.model.backbone.bottom_up.grad_checkpointing = True
    assert instantiate(cfg.model).backbone.bottom_up.body.grad_checkpointing is True


# -- 5. memory: mixed precision ----------------------------------------------------------------

@pytest.mark.parametrize("name, dtype", [("faster_rcnn_nasnet_a_mobile_FPN_1x", torch.bfloat16),
                                         ("faster_rcnn_nasnet_a_mobile_FPN_1x", torch.float16),
                                         ("faster_rcnn_nasnet_a_large_C4_1x", torch.float16),
                                         ("retinanet_nasnet_a_mobile_FPN_1x", torch.bfloat16)])
def test_detector_trains_under_autocast(name, dtype, genotype_file):
    """What AMPTrainer does around the model (autocast forward, backward), on the CPU: the NASNet
    features come out in the autocast dtype with the shapes output_shape() promises, the losses and
    every trainable parameter's gradient are finite. (AMPTrainer itself needs CUDA: below.)"""
    torch.manual_seed(0)
    model = build_model(stock_cfg(name, genotype_file)).train()
    bottom_up = model.backbone.bottom_up if hasattr(model.backbone, "bottom_up") else model.backbone
    with EventStorage(0), torch.autocast("cpu", dtype=dtype):
        features = bottom_up(torch.randn(1, 3, 64, 96))
        losses = model(_batch())
    for key, spec in bottom_up.output_shape().items():
        assert features[key].dtype == dtype
        assert features[key].shape == (1, spec.channels, 64 // spec.stride, 96 // spec.stride)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    trainable = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for _, p in trainable)


def _amp_trainer(cfg):
    with warnings.catch_warnings():  # detectron2 builds torch.cuda.amp.GradScaler (deprecated; off without CUDA)
        warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.GradScaler.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*CUDA is not available.*", category=UserWarning)
        return DefaultTrainer(cfg)


def _amp_cfg(genotype_file, synthetic_train, out):
    cfg = stock_cfg("faster_rcnn_nasnet_a_mobile_FPN_1x", genotype_file)
    cfg.SOLVER.AMP.ENABLED = True
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (synthetic_train,), ()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 96
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, cfg.SOLVER.CHECKPOINT_PERIOD = 2, 1, 100
    cfg.OUTPUT_DIR = str(out)
    return cfg


def test_amp_config_key_selects_detectron2s_amp_trainer(genotype_file, synthetic_train, tmp_path):
    trainer = _amp_trainer(_amp_cfg(genotype_file, synthetic_train, tmp_path / "run"))
    assert isinstance(trainer._trainer, AMPTrainer)
    with EventStorage(0):  # not trained here (AMPTrainer needs CUDA): close the writers it opened
        for hook in trainer._hooks:
            if isinstance(hook, hooks.PeriodicWriter):
                hook.after_train()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="detectron2's AMPTrainer needs CUDA")
def test_amp_trainer_trains_on_the_gpu(genotype_file, synthetic_train, tmp_path):
    cfg = _amp_cfg(genotype_file, synthetic_train, tmp_path / "run")
    cfg.MODEL.DEVICE = "cuda"
    trainer = _amp_trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert torch.isfinite(torch.tensor(trainer.storage.history("total_loss").latest()))
