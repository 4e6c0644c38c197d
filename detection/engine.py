"""Training and evaluation on detectron2's engine: ``DefaultTrainer``, ``launch``, ``COCOEvaluator``.

``setup`` turns command-line arguments into a frozen config and checks everything that can be
checked before training starts (datasets exist, numbers are in range, the weights can be loaded
safely, the backbone can be built as configured); ``main`` trains or evaluates, holding
``OUTPUT_DIR``'s run lock so that a second run on the same directory is refused; ``launch_main`` runs it on one process, or on every GPU and machine
through ``detectron2.engine.launch`` (torch.distributed), exactly as detectron2's ``train_net.py``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import weakref
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_setup, hooks, launch
from detectron2.evaluation import (COCOEvaluator, COCOPanopticEvaluator, DatasetEvaluators, SemSegEvaluator,
                                   verify_results)
from detectron2.utils import comm

from nasnet_backbones.runlock import run_lock

from .checkpoint import NASNetDetectionCheckpointer, check_weights
from .config import check_config_numbers
from .datasets import (DatasetImageError, OpenRGBDatasetMapper, check_dataset, needs_masks, needs_semantic,
                       register_coco_json, register_coco_panoptic_separated_json, set_num_classes_from_json,
                       uses_rle_masks)
from .model_zoo import get_config

__all__ = ["NASNetTrainer", "merge_overrides", "setup", "main", "launch_main"]

logger = logging.getLogger(__name__)


class _OneLineForBadImages(logging.Filter):
    """detectron2's training loop logs any exception with its traceback before re-raising it; a
    dataset image that cannot be read is bad input, which the command line reports in one line
    naming the file, so its record loses the traceback (the message stays, in log.txt too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], DatasetImageError):
            record.msg, record.args = "%s %s", (record.getMessage(), record.exc_info[1])
            record.exc_info = record.exc_text = None
        return True


_BAD_IMAGE_FILTER = _OneLineForBadImages()
logging.getLogger("detectron2.engine.train_loop").addFilter(_BAD_IMAGE_FILTER)  # the logger of TrainerBase.train


class NASNetTrainer(DefaultTrainer):
    """``DefaultTrainer`` with COCO evaluation, ImageNet initialisation from classification
    checkpoints, the ScheduledDropPath ramp when the backbone uses drop path, and images read
    through ``nasnet_backbones.images.open_rgb`` (:class:`~detection.datasets.OpenRGBDatasetMapper`)."""

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        return build_detection_train_loader(cfg, mapper=OpenRGBDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return build_detection_test_loader(cfg, dataset_name, mapper=OpenRGBDatasetMapper(cfg, is_train=False))

    def __init__(self, cfg: CfgNode) -> None:
        super().__init__(cfg)
        # Same checkpointables as DefaultTrainer's; ours also reads classification checkpoints.
        self.checkpointer = NASNetDetectionCheckpointer(self._trainer.model, cfg.OUTPUT_DIR, cfg=cfg,
                                                        trainer=weakref.proxy(self))
        for hook in self._hooks:
            if isinstance(hook, hooks.PeriodicCheckpointer):
                hook.checkpointer = self.checkpointer

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None):
        """COCO boxes (and masks, when the model predicts them); for panoptic datasets also
        semantic segmentation (mIoU) and panoptic quality (PQ), as detectron2's train_net.py."""
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        kind = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", "coco")
        evaluators = []
        if kind in ("sem_seg", "coco_panoptic_seg"):
            evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
        if kind in ("coco", "coco_panoptic_seg"):
            # The fast (C++) COCOeval lives in detectron2._C, which does not load on every Python.
            evaluators.append(COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=False))
        if kind == "coco_panoptic_seg":
            evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
        if not evaluators:
            raise ValueError(f"no evaluator for dataset {dataset_name} (evaluator_type {kind!r})")
        return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)

    def build_hooks(self) -> list:
        hook_list = super().build_hooks()
        if self.cfg.MODEL.NASNET.DROP_PATH_PROB > 0:
            max_iter = self.cfg.SOLVER.MAX_ITER

            def ramp(trainer) -> None:
                model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
                for module in model.modules():
                    if hasattr(module, "set_drop_path_progress"):
                        module.set_drop_path_progress(trainer.iter / max_iter)

            hook_list.insert(0, hooks.CallbackHook(before_step=ramp))
        return hook_list


def merge_overrides(cfg: CfgNode, opts: list[str] | None) -> None:
    """``KEY VALUE ...`` overrides, with one clear error for a bad key or value."""
    opts = list(opts or [])
    if opts and opts[0] == "--":
        opts = opts[1:]
    if len(opts) % 2:
        raise ValueError(f"config overrides come in KEY VALUE pairs; got an odd number: {' '.join(opts)}")
    try:
        cfg.merge_from_list(opts)
    except (KeyError, ValueError, AssertionError, TypeError) as exc:
        raise ValueError(f"config override {' '.join(opts)}: {exc}") from None


def setup(args: argparse.Namespace) -> CfgNode:
    """Config from ``--config-file`` (a path or a shipped name) and ``KEY VALUE`` overrides, checked."""
    cfg = get_config(args.config_file)
    if not Path(args.config_file).is_file():  # a shipped name: default_setup copies the file it names
        from .model_zoo import get_config_file

        args.config_file = get_config_file(args.config_file)
    merge_overrides(cfg, args.opts)
    if getattr(args, "allow_pickle", False):
        cfg.MODEL.NASNET.ALLOW_PICKLE_WEIGHTS = True
    check_config_numbers(cfg, training=not args.eval_only)
    if args.dataset_json:
        train_json, val_json = args.dataset_json, args.val_json or args.dataset_json
        image_root, val_root = args.image_root, args.val_image_root or args.image_root
        if not image_root:
            raise ValueError("--dataset-json needs --image-root (the folder the json's file_name entries are in)")
        register = register_coco_panoptic_separated_json if needs_semantic(cfg) else register_coco_json
        register("nasnet_custom_train", train_json, image_root)
        register("nasnet_custom_val", val_json, val_root)
        cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("nasnet_custom_train",), ("nasnet_custom_val",)
        set_num_classes_from_json(cfg, train_json, "nasnet_custom_train")
        if needs_masks(cfg) and cfg.INPUT.MASK_FORMAT == "polygon" and uses_rle_masks(train_json):
            logger.info("%s stores masks as RLE: INPUT.MASK_FORMAT set to bitmask", train_json)
            cfg.INPUT.MASK_FORMAT = "bitmask"
    if not torch.cuda.is_available() and cfg.MODEL.DEVICE.startswith("cuda"):
        logger.warning("CUDA is not available; running on the CPU")
        cfg.MODEL.DEVICE = "cpu"
    if args.eval_only and not cfg.DATASETS.TEST:
        raise ValueError("--eval-only needs a dataset to evaluate: set DATASETS.TEST or pass --val-json")
    if not args.eval_only and not cfg.DATASETS.TRAIN:
        raise ValueError("nothing to train on: set DATASETS.TRAIN or pass --dataset-json")
    if args.eval_only and not cfg.MODEL.WEIGHTS:
        raise ValueError("--eval-only with MODEL.WEIGHTS empty would evaluate random weights; give MODEL.WEIGHTS")
    if not (args.resume and (Path(cfg.OUTPUT_DIR) / "last_checkpoint").is_file()):  # else resumed from there
        check_weights(cfg.MODEL.WEIGHTS, allow_pickle=cfg.MODEL.NASNET.ALLOW_PICKLE_WEIGHTS)
    for name in (*(cfg.DATASETS.TEST if args.eval_only else cfg.DATASETS.TRAIN), *cfg.DATASETS.TEST):
        check_dataset(cfg, name)
    _check_model(cfg)
    cfg.freeze()
    return cfg


def _check_model(cfg: CfgNode) -> None:
    """Build the backbone once on the CPU, so a bad architecture, genotype or feature list fails
    here, before datasets are loaded and workers started."""
    from detectron2.modeling import build_backbone

    if cfg.MODEL.BACKBONE.NAME == "build_nasnet_c4_backbone" and cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN" \
            and cfg.MODEL.ROI_HEADS.NAME != "NASNetC4ROIHeads":
        raise ValueError(f"MODEL.BACKBONE.NAME build_nasnet_c4_backbone ends at stride 16; its box head is "
                         f"MODEL.ROI_HEADS.NAME NASNetC4ROIHeads (the remaining cells), not {cfg.MODEL.ROI_HEADS.NAME}")
    build_backbone(cfg.clone())


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Train or evaluate as ``args`` say; the main process holds ``OUTPUT_DIR``'s run lock
    throughout (other processes of the same run write only through it)."""
    cfg = setup(args)
    with run_lock(cfg.OUTPUT_DIR) if comm.is_main_process() else nullcontext():
        default_setup(cfg, args)  # the first write into OUTPUT_DIR (config.yaml, log.txt)
        return _run(cfg, args)


def _run(cfg: CfgNode, args: argparse.Namespace) -> dict[str, Any]:
    if args.eval_only:
        model = NASNetTrainer.build_model(cfg)
        NASNetDetectionCheckpointer(model, cfg.OUTPUT_DIR, cfg=cfg).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = NASNetTrainer.test(cfg, model)
        if cfg.TEST.EXPECTED_RESULTS:
            verify_results(cfg, results)
    else:
        trainer = NASNetTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
        # DefaultTrainer.train returns them only with TEST.EXPECTED_RESULTS; the final EvalHook kept them.
        results = getattr(trainer, "_last_eval_results", None)
    if results and comm.is_main_process():
        _write_results(Path(cfg.OUTPUT_DIR) / "results.json", results)
    return results


def _write_results(path: Path, results: dict[str, Any]) -> None:
    """Evaluation results as plain JSON (detectron2 returns OrderedDicts of numpy floats)."""
    import json

    def plain(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {str(k): plain(v) for k, v in obj.items()}
        if hasattr(obj, "__float__") and not isinstance(obj, (int, bool)):
            value = float(obj)
            return None if math.isnan(value) else value  # COCO reports NaN for empty size ranges
        return obj

    path.write_text(json.dumps(plain(results), indent=2, allow_nan=False) + "\n")


def launch_main(args: argparse.Namespace) -> dict[str, Any] | None:
    """Run :func:`main` on ``--num-gpus`` processes per machine across ``--num-machines``."""
    dist_url = args.dist_url
    if dist_url == "auto" and args.num_machines > 1:
        raise ValueError("--dist-url must be given (tcp://HOST:PORT of machine 0) when --num-machines > 1")
    if args.num_gpus > 1 and not torch.cuda.is_available():
        raise ValueError(f"--num-gpus {args.num_gpus} needs CUDA, which is not available here")
    if args.num_gpus * args.num_machines == 1:
        return main(args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank, dist_url=dist_url,
           args=(args,))
    return None
