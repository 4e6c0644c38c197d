"""``nasnet export classifier | backbone | detector | quantize | ort``: verified ONNX files."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nasnet_backbones.argtypes import add_renamed, image_size, nonnegative_float, number, positive_int, probability, refuse_together
from nasnet_backbones.model_args import add_model_arguments, build_model_from_args
from detection.torchvision import DETECTOR_KINDS

from . import ort_format
from .detections import DETECTOR_EXPORTER
from .align_channels import ALIGNMENTS, DEFAULT_ALIGNMENT
from .exporters import DEFAULT_EXPORTER, DEFAULT_OPSETS, EXPORTERS, MIN_OPSETS, resolve_opset
from .quantize import DEFAULT_MAX_REL_ERROR, DEFAULT_MIN_AGREEMENT, DEFAULT_MIN_BOX_IOU

__all__ = ["add_parser"]


_positive_batch = number(int, "a positive integer", lambda v: v >= 1)


def _batch(value: str) -> int | str:
    """``dynamic`` or a positive batch size (argparse ``type=``)."""
    if value == "dynamic":
        return value
    try:
        return _positive_batch(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"--batch must be 'dynamic' or a positive integer, not {value!r}") from None


_MIN_OPSET = min(MIN_OPSETS.values())  # each exporter's own minimum is checked with --exporter (exporters.check_opset)
_OPSET_HELP = ("ONNX opset (default {dynamo} with --exporter dynamo, {torchscript} with torchscript; the dynamo "
               "exporter writes {min_dynamo} or later)").format(**DEFAULT_OPSETS, min_dynamo=MIN_OPSETS["dynamo"])


_opset = number(int, f"an opset of {_MIN_OPSET} or later", lambda v: v >= _MIN_OPSET)
_num_classes = number(int, "at least 2 (the background and one class)", lambda v: v >= 2)


def _local_file(value: str | None) -> str | None:
    """``value`` when it names a file here (not a weights tag or a URL), else ``None``."""
    from pathlib import Path

    return value if value and "://" not in value and Path(value).exists() else None


_ALIGN_HELP = ("pad channel counts with zero filters to a multiple of onnxruntime's SIMD block, so that its fast "
               "x86 kernels (NCHWc FP32, INT8) take every convolution; outputs are unchanged and verified. auto "
               "(default): 16 with AVX-512F, 8 with AVX2, none otherwise; recorded in the metadata (channel_alignment)")


def _add_align_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--align-channels", choices=ALIGNMENTS, default=DEFAULT_ALIGNMENT, help=_ALIGN_HELP)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="verified ONNX export (classifier, backbone, detector), INT8, ORT format",
                              description="Export to ONNX; every file is checked with onnx.checker and compared "
                              "with PyTorch in onnxruntime on another input before it is written.")
    sub = p.add_subparsers(dest="export_command", metavar="SUBCOMMAND")
    sub.required = True
    for kind, text in (("classifier", "logits output"), ("backbone", "one output per stride: stride2 .. stride32")):
        e = sub.add_parser(kind, help=f"export a {kind} ({text})")
        add_model_arguments(e)
        e.add_argument("--random-weights", action="store_true",
                       help="export the architecture with random weights (default: the model's pretrained weights)")
        e.add_argument("--input-size", type=image_size,
                       help="square input size baked into the graph (default: the model's)")
        e.add_argument("--batch", type=_batch, default="dynamic", help="'dynamic' (default) or a fixed batch size")
        e.add_argument("--dynamic-size", action="store_true",
                       help="any input height/width of at least twice the deepest stride (64 for the ImageNet stem; "
                       "TF 'SAME' padding computed in the graph); verified at a second size")
        e.add_argument("--exporter", choices=EXPORTERS, default=DEFAULT_EXPORTER,
                       help="PyTorch's ONNX exporter: dynamo (default; built on torch.export) or torchscript (the "
                       "legacy TorchScript-based one, deprecated since PyTorch 2.9); recorded in the file's metadata")
        e.add_argument("--opset", type=_opset, help=_OPSET_HELP)
        _add_align_argument(e)
        e.add_argument("--rtol", type=nonnegative_float, default=1e-4,
                       help="verification tolerance, relative to the output scale")
        e.add_argument("--atol", type=nonnegative_float, default=1e-5, help="verification tolerance, absolute")
        e.add_argument("-o", "--output", required=True, help="the .onnx file to write")
        e.add_argument("--json", action="store_true", help="print the verification report as JSON")
        e.set_defaults(func=_run, kind=kind)

    d = sub.add_parser("detector", help="a whole detectron2 or torchvision detector (boxes, classes, scores), "
                       "any image size")
    d.add_argument("--framework", choices=("detectron2", "torchvision"), default="detectron2",
                   help="detectron2 (default: a config) or torchvision (a detector by name, --model)")
    d.add_argument("--config-file", metavar="FILE", help="detectron2: config file or shipped config name")
    d.add_argument("--weights", help="detectron2: detector checkpoint (default: the config's MODEL.WEIGHTS); "
                   "torchvision: the whole detector's state_dict saved with torch.save (default: random weights)")
    d.add_argument("--allow-pickle", action="store_true",
                   help="detectron2: load pickle-based weights (its model-zoo .pkl, or a .pth that torch.load("
                   "weights_only=True) refuses). RISK: unpickling runs any code the file contains; only for files "
                   "you trust. Same as MODEL.NASNET.ALLOW_PICKLE_WEIGHTS True")
    tv = d.add_argument_group("torchvision detectors")
    tv.add_argument("--model", choices=DETECTOR_KINDS, help="the torchvision detector")
    tv.add_argument("--backbone", default="nasnet_a_mobile",
                    help="registered model name, or a genotype JSON file (with --cells and --filters)")
    tv.add_argument("--cells", type=positive_int, default=4,
                    help="with a genotype backbone: normal cells per stack (N)")
    tv.add_argument("--filters", type=positive_int, default=44, help="with a genotype backbone: base width")
    tv.add_argument("--num-classes", type=_num_classes, default=91,
                    help="classes including the background (COCO: 91)")
    tv.add_argument("--min-size", type=positive_int, help="the transform's shortest side (default 800; ssdlite: its fixed "
                    "square side, default 320)")
    tv.add_argument("--max-size", type=positive_int, help="the transform's longest side (default 1333; not for ssdlite)")
    tv.add_argument("--fpn-channels", type=positive_int, default=256, help="FPN width (not for ssdlite)")
    tv.add_argument("--score-thresh", type=probability, help="drop detections scoring lower (default: the detector's)")
    add_renamed(d, "--input-size", old=("--image-size",), dest="image_size", type=positive_int, nargs=2,
                default=[320, 416], metavar=("H", "W"), help="size of the traced image (any size works in the graph)")
    d.add_argument("--exporter", choices=EXPORTERS, default=DETECTOR_EXPORTER,
                   help=f"PyTorch's ONNX exporter (default {DETECTOR_EXPORTER}: torch.export cannot capture the "
                   "detectors' box post-processing yet; dynamo tries and says where it stops)")
    d.add_argument("--opset", type=_opset, help=_OPSET_HELP)
    _add_align_argument(d)
    d.add_argument("--verify-image", help="an image with objects the model detects, for the onnxruntime check "
                   "(default: drawn shapes)")
    d.add_argument("--score-atol", type=nonnegative_float, default=1e-3, help="verification: max score difference")
    d.add_argument("--box-rtol", type=nonnegative_float, default=5e-3,
                   help="verification: max box difference / image size")
    d.add_argument("-o", "--output", required=True)
    d.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                   help="detectron2: config overrides, last")
    d.set_defaults(func=_detector)

    q = sub.add_parser("quantize", help="static INT8 (QDQ) with calibration, checked against FP32")
    q.add_argument("model", help="an FP32 .onnx from `nasnet export`")
    q.add_argument("--calib", required=True, help="a folder of images (searched recursively) or 'synthetic'")
    q.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                   help="per-channel weight scales (default; --no-per-channel for per-tensor)")
    q.add_argument("--num-calibration", type=positive_int, default=32, help="calibration images")
    q.add_argument("--num-held-out", type=positive_int, default=16,
                   help="held-out images for the FP32 agreement check")
    q.add_argument("--reduce-range", choices=("auto", "on", "off"), default="auto",
                   help="7-bit weights, for x86 hosts without VNNI whose u8 x s8 sums saturate (default auto: on "
                        "exactly where this host lacks VNNI; set it for the host that will run the file)")
    q.add_argument("--pool-as-conv", action=argparse.BooleanOptionalAction, default=True,
                   help="run TF 'SAME' average pools as a depthwise convolution and a product, which onnxruntime's "
                        "INT8 kernels run fast (default; its QLinearAveragePool is scalar code)")
    gates = q.add_argument_group("agreement with FP32 the INT8 file must reach to be written")
    gates.add_argument("--min-agreement", type=probability, default=DEFAULT_MIN_AGREEMENT,
                       help=f"classifiers: share of held-out images with FP32's top-1 class (default "
                       f"{DEFAULT_MIN_AGREEMENT:g})")
    gates.add_argument("--max-rel-error", type=nonnegative_float, default=DEFAULT_MAX_REL_ERROR,
                       help=f"backbones and other graphs: worst output error over its FP32 scale (default "
                       f"{DEFAULT_MAX_REL_ERROR:g})")
    gates.add_argument("--min-box-iou", type=probability, default=DEFAULT_MIN_BOX_IOU,
                       help=f"detectors: mean IoU of FP32's boxes with INT8's of the same class (default "
                       f"{DEFAULT_MIN_BOX_IOU:g})")
    gates.add_argument("--box-score-threshold", type=probability, default=0.5,
                       help="detectors: FP32 detections scoring at least this are compared (default 0.5)")
    q.add_argument("-o", "--output", required=True, help="the INT8 .onnx file to write")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_quantize)

    ort_format.add_parser(sub)


def _run(args: argparse.Namespace) -> int:
    from .onnx_export import export_backbone, export_classifier, refuse_own_input

    refuse_together(args, "--random-weights", "--weights")
    opset = resolve_opset(args.exporter, args.opset)  # before the model is built
    refuse_own_input(args.output, "-o/--output", {"--weights": _local_file(args.weights),
                                                  "--genotype": args.genotype})
    kwargs = {"features_only": True} if args.kind == "backbone" else {}
    if args.input_size:
        kwargs["img_size"] = args.input_size
    model = build_model_from_args(args, pretrained_default=not args.random_weights, **kwargs)
    export = export_backbone if args.kind == "backbone" else export_classifier
    report = export(model, args.output, input_size=args.input_size, batch=args.batch, opset=opset,
                    rtol=args.rtol, atol=args.atol, dynamic_size=args.dynamic_size, exporter=args.exporter,
                    align_channels=args.align_channels)
    coverage = ort_format.mobile_coverage(args.output)
    if args.json:
        json.dump({**report.to_dict(), "mobile_coverage": coverage.to_dict()}, sys.stdout, indent=2)
        print()
    else:
        print(report.summary())
        print(coverage.summary())
        hint = _fixed_shape_hint(args, coverage)
        if hint:
            print(hint)
    return 0


def _fixed_shape_hint(args: argparse.Namespace, coverage: Any) -> str:
    """What to re-export with when a dynamic input shape leaves NNAPI and CoreML (nearly) no nodes."""
    if coverage.fixed_input_shape:
        return ""
    fixes = ((["--batch 1"] if args.batch == "dynamic" else [])
             + (["without --dynamic-size"] if args.dynamic_size else []))
    return (f"hint: for NNAPI or CoreML re-export with {' and '.join(fixes) or 'a fixed input shape'} (a dynamic "
            "shape leaves them no nodes), or convert with `nasnet export ort`, which fixes the batch to 1")


def _quantize(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .quantize import quantize_onnx

    report = quantize_onnx(args.model, args.output, args.calib, args.per_channel, args.num_calibration,
                           args.num_held_out, args.box_score_threshold, min_agreement=args.min_agreement,
                           max_rel_error=args.max_rel_error, min_box_iou=args.min_box_iou,
                           reduce_range={"auto": None, "on": True, "off": False}[args.reduce_range],
                           pool_as_conv=args.pool_as_conv)
    if args.json:
        json.dump(asdict(report), sys.stdout, indent=2)
        print()
    else:
        print(report.summary())
    return 0


_TORCHVISION_ONLY = ("model", "min_size", "max_size", "score_thresh")


def _detector(args: argparse.Namespace) -> int:
    from .onnx_export import refuse_own_input

    opset = resolve_opset(args.exporter, args.opset)  # before anything is built
    refuse_own_input(args.output, "-o/--output", {
        "--weights": _local_file(args.weights), "--config-file": _local_file(args.config_file),
        "--backbone": _local_file(args.backbone), "--verify-image": args.verify_image})
    if args.framework == "torchvision":
        if args.config_file or args.opts:
            raise ValueError("--config-file and --opts are for --framework detectron2; a torchvision detector is "
                             "chosen with --model and --backbone")
        if args.allow_pickle:
            raise ValueError("--allow-pickle is for --framework detectron2: torchvision detector weights are always "
                             "read without unpickling (a state_dict .pth or .safetensors)")
        if not args.model:
            raise ValueError(f"--framework torchvision needs --model ({', '.join(DETECTOR_KINDS)})")
        from .torchvision_detector import export_named_torchvision_detector

        report = export_named_torchvision_detector(
            args.model, args.output, backbone=args.backbone, num_classes=args.num_classes, cells=args.cells,
            filters=args.filters, fpn_channels=args.fpn_channels, min_size=args.min_size, max_size=args.max_size,
            score_thresh=args.score_thresh, weights=args.weights, image_size=tuple(args.image_size),
            score_atol=args.score_atol, box_rtol=args.box_rtol, verify_image=args.verify_image, opset=opset,
            exporter=args.exporter, align_channels=args.align_channels)
        print(report.summary())
        return 0
    given = [f"--{name.replace('_', '-')}" for name in _TORCHVISION_ONLY if getattr(args, name) is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: for --framework torchvision only")
    if not args.config_file:
        raise ValueError("--framework detectron2 (the default) needs --config-file")
    from .detectron2_detector import export_detector_from_config

    report = export_detector_from_config(
        args.config_file, args.output, weights=args.weights, opts=args.opts, allow_pickle=args.allow_pickle,
        image_size=tuple(args.image_size), score_atol=args.score_atol, box_rtol=args.box_rtol,
        verify_image=args.verify_image, opset=opset, exporter=args.exporter, align_channels=args.align_channels)
    print(report.summary())
    return 0
