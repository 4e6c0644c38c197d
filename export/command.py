"""``nasnet export classifier | backbone``: verified ONNX files."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nasnet_backbones.model_args import add_model_arguments, build_model_from_args

__all__ = ["add_parser"]


def _batch(value: str) -> int | str:
    if value == "dynamic":
        return value
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch must be 'dynamic' or a positive integer, not {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"--batch must be positive, not {number}")
    return number


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
        e.add_argument("--input-size", type=int, help="square input size baked into the graph (default: the model's)")
        e.add_argument("--batch", type=_batch, default="dynamic", help="'dynamic' (default) or a fixed batch size")
        e.add_argument("--dynamic-size", action="store_true",
                       help="any input height/width (TF 'SAME' padding computed in the graph); verified at a second size")
        e.add_argument("--opset", type=int, default=17)
        e.add_argument("--rtol", type=float, default=1e-4, help="verification tolerance, relative to the output scale")
        e.add_argument("--atol", type=float, default=1e-5, help="verification tolerance, absolute")
        e.add_argument("-o", "--output", required=True, help="the .onnx file to write")
        e.add_argument("--json", action="store_true", help="print the verification report as JSON")
        e.set_defaults(func=_run, kind=kind)

    d = sub.add_parser("detector", help="a whole detectron2 detector (boxes, classes, scores), any image size")
    d.add_argument("--config-file", required=True, metavar="FILE", help="config file or shipped config name")
    d.add_argument("--weights", help="detector checkpoint (default: the config's MODEL.WEIGHTS)")
    d.add_argument("--image-size", type=int, nargs=2, default=[320, 416], metavar=("H", "W"),
                   help="size of the traced image (any size works in the graph)")
    d.add_argument("--verify-image", help="an image with objects the model detects, for the onnxruntime check "
                   "(default: drawn shapes)")
    d.add_argument("--score-atol", type=float, default=1e-3, help="verification: max score difference")
    d.add_argument("--box-rtol", type=float, default=5e-3, help="verification: max box difference / image size")
    d.add_argument("-o", "--output", required=True)
    d.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE", help="config overrides, last")
    d.set_defaults(func=_detector)

    q = sub.add_parser("quantize", help="static INT8 (QDQ) with calibration, checked against FP32")
    q.add_argument("model", help="an FP32 .onnx from `nasnet export`")
    q.add_argument("--calib", required=True, help="a folder of images (searched recursively) or 'synthetic'")
    q.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                   help="per-channel weight scales (default; --no-per-channel for per-tensor)")
    q.add_argument("--num-calibration", type=int, default=32, help="calibration images")
    q.add_argument("--num-held-out", type=int, default=16, help="held-out images for the FP32 agreement check")
    q.add_argument("-o", "--output", required=True, help="the INT8 .onnx file to write")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_quantize)

    o = sub.add_parser("ort", help="convert to the ORT format of onnxruntime mobile (verified by loading it back)")
    o.add_argument("model", help="an .onnx file")
    o.add_argument("-o", "--output", help="the .ort file (default: next to the model)")
    o.set_defaults(func=_ort)


def _run(args: argparse.Namespace) -> int:
    from .onnx_export import export_backbone, export_classifier

    kwargs = {"features_only": True} if args.kind == "backbone" else {}
    if args.input_size:
        kwargs["img_size"] = args.input_size
    model = build_model_from_args(args, pretrained_default=not args.random_weights, **kwargs)
    export = export_backbone if args.kind == "backbone" else export_classifier
    report = export(model, args.output, input_size=args.input_size, batch=args.batch, opset=args.opset,
                    rtol=args.rtol, atol=args.atol, dynamic_size=args.dynamic_size)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        print()
    else:
        print(report.summary())
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .quantize import quantize_onnx

    report = quantize_onnx(args.model, args.output, args.calib, args.per_channel, args.num_calibration,
                           args.num_held_out)
    if args.json:
        json.dump(asdict(report), sys.stdout, indent=2)
        print()
    else:
        print(report.summary())
    return 0


def _ort(args: argparse.Namespace) -> int:
    from .quantize import convert_to_ort

    path, diff = convert_to_ort(args.model, args.output)
    print(f"{path}: loaded back in onnxruntime, max difference from the .onnx {diff:.2e}")
    return 0


def _detector(args: argparse.Namespace) -> int:
    from .detector import export_detector_from_args

    print(export_detector_from_args(args).summary())
    return 0
