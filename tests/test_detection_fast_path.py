"""The fast eager path of the detection backbones (issue 17 item 4): ``MODEL.NASNET.OPTIMIZE_FOR_INFERENCE``
for detectron2 and ``optimize_for_inference`` for torchvision's detectors run a BatchNorm-folded copy of the
NASNet network at inference. With the real tools (detectron2's stock ``get_cfg``, ``build_model``,
``DetectionCheckpointer``, ``DefaultPredictor``; torchvision's ``FasterRCNN``): the same detections as the
plain path, a copy rebuilt when the weights change (checkpoint load, in-place update, ``.to()``), training
untouched, nothing in the state dict, no copy when the key is off or while tracing."""

import copy

import numpy as np
import pytest
import torch

detectron2 = pytest.importorskip("detectron2")

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.engine import DefaultPredictor  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from torchvision.ops.misc import FrozenBatchNorm2d  # noqa: E402

import detection  # noqa: E402
from detection.backbone import NASNetBackbone, NASNetC4Head  # noqa: E402
from detection.config import add_nasnet_config  # noqa: E402
from detection.torchvision import NASNetBody, torchvision_detector  # noqa: E402
from nasnet_backbones import genotypes  # noqa: E402


def d2_cfg(genotype_file, on: bool, name: str = "faster_rcnn_nasnet_a_mobile_FPN_1x"):
    """detectron2's stock get_cfg with the project's keys and a shipped YAML; a tiny NASNet-A, FrozenBN."""
    cfg = add_nasnet_config(get_cfg())
    cfg.merge_from_file(detection.get_config_file(name))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.NASNET.GENOTYPE, cfg.MODEL.NASNET.CELLS, cfg.MODEL.NASNET.FILTERS = str(genotype_file), 1, 8
    cfg.MODEL.NASNET.OPTIMIZE_FOR_INFERENCE = on
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # every box survives: many detections to compare
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 128, 192
    return cfg


def randomize_norms(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial statistics and affine values in every (frozen) BatchNorm, so folding has work to do."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(getattr(m, "running_var", None), torch.Tensor) and m.running_var.dim() == 1:
                n = m.running_var.numel()
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


def shadows(model: torch.nn.Module) -> list:
    return [m._shadow for m in model.modules() if isinstance(m, (NASNetBackbone, NASNetC4Head, NASNetBody))]


def saved_weights(genotype_file, tmp_path, seed: int, name: str = "faster_rcnn_nasnet_a_mobile_FPN_1x") -> str:
    """A detector checkpoint with random weights and BatchNorm statistics, saved by DetectionCheckpointer."""
    torch.manual_seed(seed)
    model = build_model(d2_cfg(genotype_file, False, name))
    randomize_norms(model, seed)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save(f"weights{seed}")
    return str(tmp_path / f"weights{seed}.pth")


def image(seed: int = 0, shape: tuple[int, int] = (120, 160)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def assert_same_detections(a: Instances, b: Instances) -> None:
    assert len(a) == len(b) > 0
    assert torch.equal(a.pred_classes, b.pred_classes)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(a.scores, b.scores, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def checkpoints(genotype_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("fast_path")
    return saved_weights(genotype_file, root, 1), saved_weights(genotype_file, root, 2)


def predictor(genotype_file, weights: str, on: bool) -> DefaultPredictor:
    cfg = d2_cfg(genotype_file, on)
    cfg.MODEL.WEIGHTS = weights
    return DefaultPredictor(cfg)


def test_detectron2_on_equals_off_and_follows_new_weights(genotype_file, checkpoints):
    first, second = checkpoints
    fast, plain = predictor(genotype_file, first, True), predictor(genotype_file, first, False)
    (shadow,) = shadows(fast.model)
    assert shadows(plain.model) == [None]  # key off: no copy at all
    assert fast.model.backbone.bottom_up.optimize_for_inference
    got = fast(image())["instances"]
    assert shadow.builds == 1 and shadow.module is not None
    assert_same_detections(got, plain(image())["instances"])
    # Another image size, with the copy built for the first one: reused, and still the same detections.
    assert_same_detections(fast(image(1, (100, 190)))["instances"], plain(image(1, (100, 190)))["instances"])
    assert shadow.builds == 1  # reused while the weights stay

    # Other weights through detectron2's checkpointer: the copy is rebuilt and follows them.
    DetectionCheckpointer(fast.model).load(second)
    DetectionCheckpointer(plain.model).load(second)
    reloaded = fast(image())["instances"]
    assert shadow.builds == 2
    assert not torch.allclose(reloaded.scores[:10], got.scores[:10])  # the detections did change
    assert_same_detections(reloaded, plain(image())["instances"])

    # An in-place change of one weight (as an optimizer step makes) is seen by the fingerprint.
    for model in (fast.model, plain.model):
        with torch.no_grad():
            model.backbone.bottom_up.body.stem.conv.weight.mul_(1.5)
    assert_same_detections(fast(image())["instances"], plain(image())["instances"])
    assert shadow.builds == 3

    # .to() drops the copy (it would stay on the old device); the next call rebuilds it.
    fast.model.to(torch.float32)
    assert shadow.module is None
    fast(image())
    assert shadow.builds == 4


def test_detectron2_state_dict_deepcopy_and_training(genotype_file, checkpoints):
    fast, plain = predictor(genotype_file, checkpoints[0], True), predictor(genotype_file, checkpoints[0], False)
    fast(image())
    (shadow,) = shadows(fast.model)
    assert shadow.module is not None
    state = fast.model.state_dict()
    assert list(state) == list(plain.model.state_dict())  # the copy is in no state dict ...
    assert [n for n, _ in fast.model.named_parameters()] == [n for n, _ in plain.model.named_parameters()]
    assert len(list(fast.model.modules())) == len(list(plain.model.modules()))  # ... nor a submodule
    twin = copy.deepcopy(fast.model)  # the copy's copy starts empty and builds its own
    (twin_shadow,) = shadows(twin)
    assert twin_shadow.module is None
    inputs = [{"image": torch.as_tensor(image().transpose(2, 0, 1).astype("float32")), "height": 120, "width": 160}]
    with torch.no_grad():
        assert_same_detections(twin(inputs)[0]["instances"], plain.model(inputs)[0]["instances"])
    assert twin_shadow.builds == 1

    # eval mode with gradients wanted: the real modules (the copy's weights are detached).
    twin_shadow.clear()
    twin(inputs)
    assert twin_shadow.module is None

    # Training: the real modules, the same losses with the key on and off; train() drops the copy.
    instances = Instances((128, 160), gt_boxes=Boxes(torch.tensor([[10.0, 20.0, 90.0, 100.0], [50, 10, 150, 70]])),
                          gt_classes=torch.tensor([0, 2]))
    batch = [{"image": torch.as_tensor(image().transpose(2, 0, 1).astype("float32")), "instances": instances}]
    losses = []
    for model in (fast.model, plain.model):
        model.train()
        torch.manual_seed(0)
        with EventStorage(0):
            losses.append(model(batch))
    assert shadow.module is None and shadow.builds == 1
    assert losses[0].keys() == losses[1].keys() and all(torch.equal(losses[0][k], losses[1][k]) for k in losses[0])


def test_detectron2_tracing_runs_the_real_modules(genotype_file, checkpoints):
    model = predictor(genotype_file, checkpoints[0], True).model
    bottom_up = model.backbone.bottom_up
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        traced = torch.jit.trace(bottom_up, (x,), strict=False, check_trace=False)
        assert bottom_up._shadow.builds == 0  # the exporters see (and fold) the real BatchNorms
        assert any(n.kind() == "aten::batch_norm" for n in traced.inlined_graph.nodes())
        want = bottom_up(x)  # eager: the folded copy
        assert bottom_up._shadow.builds == 1
        got = traced(x)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-4)


def test_detectron2_c4_head_folds_too(genotype_file):
    name = "faster_rcnn_nasnet_a_large_C4_1x"
    outputs = []
    for on in (True, False):
        cfg = d2_cfg(genotype_file, on, name)
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        randomize_norms(model, 3)
        inputs = [{"image": torch.as_tensor(image().transpose(2, 0, 1).astype("float32")), "height": 120,
                   "width": 160}]
        with torch.no_grad():
            outputs.append(model(inputs)[0]["instances"])
        built = [s.builds if s is not None else None for s in shadows(model)]
        assert built == ([1, 1] if on else [None, None])  # the trunk and the box head
    assert_same_detections(*outputs)


def tv_detector(on: bool, frozen: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = {"optimize_for_inference": on, **({"norm_layer": FrozenBatchNorm2d} if frozen else {})}
    model = torchvision_detector("fasterrcnn", genotypes.NASNET_A, 4, cells=1, filters=4, min_size=96, max_size=128,
                                 fpn_channels=32, score_thresh=0.0, backbone_kwargs=kwargs)
    randomize_norms(model, 0)
    return model.eval()


@pytest.mark.parametrize("frozen", [True, False], ids=["FrozenBatchNorm2d", "BatchNorm2d-eval"])
def test_torchvision_on_equals_off_and_follows_new_weights(frozen):
    fast, plain = tv_detector(True, frozen), tv_detector(False, frozen)
    assert list(fast.state_dict()) == list(plain.state_dict())
    (shadow,) = shadows(fast)
    assert shadows(plain) == [None]
    images = [torch.rand(3, 96, 120, generator=torch.Generator().manual_seed(0))]

    def same(a, b):
        assert len(a["boxes"]) == len(b["boxes"]) > 0 and torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)

    with torch.inference_mode():
        got = fast(images)[0]
        same(got, plain(images)[0])
    assert shadow.builds == 1

    other = tv_detector(False, frozen)
    randomize_norms(other, 7)
    for model in (fast, plain):
        model.load_state_dict(other.state_dict())
    assert shadow.module is None  # dropped by the load
    with torch.no_grad():
        reloaded = fast(images)[0]
        same(reloaded, plain(images)[0])
    assert shadow.builds == 2 and not torch.allclose(reloaded["scores"][:10], got["scores"][:10])

    # Training: the real modules, identical losses.
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0]]), "labels": torch.tensor([2])}]
    losses = []
    for model in (fast, plain):
        model.train()
        torch.manual_seed(0)
        losses.append(model(images, targets))
    assert shadow.module is None and shadow.builds == 2
    assert all(torch.equal(losses[0][k], losses[1][k]) for k in losses[0])
