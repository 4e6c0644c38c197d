"""An exported graph's input conventions: one record, written by every export, read by quantize and bench.

Every graph ``nasnet export`` writes (classifier, backbone, detectron2 and torchvision detectors,
and their INT8 and ORT versions, which keep their source's metadata) carries one metadata entry,
``input_conventions``: a JSON object of :class:`InputConventions` saying what the graph's input
holds (framework, pixel value range, channel order, how images are resized, fixed or any size).
Quantization prepares its calibration images by it and ``nasnet bench`` feeds inputs by it;
neither looks at any other key to guess them.

Graphs written before the record existed (this package's 0.1.0 development versions) have none.
:func:`read_conventions` reads them by the documented old defaults, which are what those exports
wrote: a four-dimensional input is a NASNet classifier or backbone (RGB, 0-1 before the
normalisation, mean and std from the ``mean``/``std`` entries or 0.5, resized to ``resize_size``
or ``input_size / 0.875`` and centre-cropped, the size fixed in the graph or recorded as
``input_size``); a three-dimensional one a detectron2 detector (0-255, BGR when its ``input`` entry
says so, else RGB, shortest side ``min_size_test`` or 800, longest at most ``max_size_test`` or
1333), or a torchvision one when its ``framework`` entry says ``torchvision`` (0-1 RGB at the size
its ``min_size``/``max_size``/``fixed_size`` entries give).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # onnx is only needed by callers that hold a graph
    import onnx

__all__ = ["CONVENTIONS_KEY", "FRAMEWORKS", "RESIZE_RULES", "InputConventions", "conventions_from_metadata",
           "read_conventions", "write_conventions"]

CONVENTIONS_KEY = "input_conventions"
FRAMEWORKS = ("nasnet", "detectron2", "torchvision")
RESIZE_RULES = ("center_crop", "shortest_side", "in_graph")
_INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")  # PIL / torchvision


@dataclass(frozen=True)
class InputConventions:
    """What an exported graph's image input holds.

    Attributes:
        framework: ``nasnet`` (a classifier or backbone: N x 3 x H x W), ``detectron2`` or
            ``torchvision`` (a whole detector: one 3 x H x W image).
        value_range: the pixel values' range before any normalisation: ``(0.0, 1.0)`` or ``(0.0, 255.0)``.
        channel_order: ``RGB`` or ``BGR``.
        resize: ``center_crop`` (resize the shorter side to ``resize_size``, crop ``input_size``
            square: classifiers and backbones), ``shortest_side`` (the caller resizes: shorter side
            to ``shortest_side``, longer at most ``longest_side``: detectron2) or ``in_graph`` (any
            size; the graph resizes, to ``shortest_side``/``longest_side``: torchvision).
        dynamic_size: the graph takes any height and width.
        input_size: the square side to feed a ``nasnet`` graph (fixed, or the one its export recorded).
        mean, std: the normalisation applied *before* the graph, on 0-1 values (``nasnet`` graphs);
            ``None`` when the graph normalises inside (detectors).
        resize_size, interpolation: ``center_crop``'s resize.
        shortest_side, longest_side: the detectors' resizing.
    """

    framework: str
    value_range: tuple[float, float]
    channel_order: str
    resize: str
    dynamic_size: bool
    input_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize_size: int | None = None
    interpolation: str = "bilinear"
    shortest_side: int | None = None
    longest_side: int | None = None

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError("invalid input conventions: " + "; ".join(problems))

    @property
    def pixel_max(self) -> float:
        """The largest pixel value (1.0 or 255.0)."""
        return self.value_range[1]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "InputConventions":
        """Parse a record; a ``ValueError`` says what is wrong with it."""
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError(f"the {CONVENTIONS_KEY} metadata is not JSON") from None
        if not isinstance(data, dict):
            raise ValueError(f"the {CONVENTIONS_KEY} metadata is not a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown, missing = sorted(set(data) - known), sorted(
            k for k in ("framework", "value_range", "channel_order", "resize", "dynamic_size") if k not in data)
        if unknown or missing:
            raise ValueError(f"the {CONVENTIONS_KEY} metadata has unknown fields {unknown} or lacks {missing}")
        for key in ("value_range", "mean", "std"):
            if isinstance(data.get(key), list):
                data[key] = tuple(data[key])
        try:
            return cls(**data)
        except TypeError as exc:  # a value of the wrong type
            raise ValueError(f"the {CONVENTIONS_KEY} metadata is malformed: {exc}") from None

    def to_metadata(self) -> dict[str, str]:
        """The metadata entry an export adds to its graph."""
        return {CONVENTIONS_KEY: self.to_json()}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _problems(c: InputConventions) -> list[str]:
    problems = []
    if c.framework not in FRAMEWORKS:
        problems.append(f"framework {c.framework!r} is not one of {', '.join(FRAMEWORKS)}")
    if tuple(c.value_range) not in ((0.0, 1.0), (0.0, 255.0)):
        problems.append(f"value_range {c.value_range!r} is not (0, 1) or (0, 255)")
    if c.channel_order not in ("RGB", "BGR"):
        problems.append(f"channel_order {c.channel_order!r} is not RGB or BGR")
    if c.resize not in RESIZE_RULES:
        problems.append(f"resize {c.resize!r} is not one of {', '.join(RESIZE_RULES)}")
    if not isinstance(c.dynamic_size, bool):
        problems.append("dynamic_size is not true or false")
    for name in ("input_size", "resize_size", "shortest_side", "longest_side"):
        value = getattr(c, name)
        if value is not None and not _positive_int(value):
            problems.append(f"{name} {value!r} is not a positive integer")
    for name in ("mean", "std"):
        value = getattr(c, name)
        if value is not None and not (len(value) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                              and math.isfinite(v) for v in value)):
            problems.append(f"{name} {value!r} is not three finite numbers")
    if c.std is not None and not problems and min(c.std) <= 0:
        problems.append(f"std {c.std!r} is not positive")
    if c.interpolation not in _INTERPOLATIONS:
        problems.append(f"interpolation {c.interpolation!r} is not one of {', '.join(_INTERPOLATIONS)}")
    if c.framework == "nasnet" and c.resize != "center_crop" or c.framework != "nasnet" and c.resize == "center_crop":
        problems.append(f"resize {c.resize!r} does not fit framework {c.framework!r}")
    if c.resize != "center_crop" and not (c.shortest_side and c.longest_side):
        problems.append("a detector's conventions need shortest_side and longest_side")
    return problems


def write_conventions(model: "onnx.ModelProto", conventions: InputConventions) -> None:
    """Record ``conventions`` in ``model``'s metadata, replacing any earlier record."""
    import onnx

    props = [p for p in model.metadata_props if p.key != CONVENTIONS_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    model.metadata_props.append(onnx.StringStringEntryProto(key=CONVENTIONS_KEY, value=conventions.to_json()))


def read_conventions(model: "onnx.ModelProto") -> InputConventions:
    """The conventions of ``model``'s (one) image input: its record, or the old defaults for a
    graph written before records existed (see the module doc). ``ValueError`` when neither fits."""
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise ValueError(f"the graph has {len(inputs)} inputs; input conventions are for one image input")
    shape = [d.dim_value or None for d in inputs[0].type.tensor_type.shape.dim]
    return conventions_from_metadata({p.key: p.value for p in model.metadata_props}, shape)


def conventions_from_metadata(metadata: Mapping[str, str], input_shape: Sequence[Any]) -> InputConventions:
    """As :func:`read_conventions`, from a graph's metadata and input shape as onnxruntime gives
    them (``session.get_modelmeta().custom_metadata_map``, ``session.get_inputs()[0].shape``; a
    dimension that is not a positive integer is dynamic), for ``.ort`` files too."""
    if CONVENTIONS_KEY in metadata:
        return InputConventions.from_json(metadata[CONVENTIONS_KEY])
    dims = [d if _positive_int(d) else None for d in input_shape]
    if len(dims) not in (3, 4):
        raise ValueError(f"an image input is N x C x H x W or C x H x W, not {len(dims)}-dimensional")
    return _legacy(metadata, dims)


def _json(metadata: Mapping[str, str], key: str, default: Any) -> Any:
    if key not in metadata:
        return default
    try:
        return json.loads(metadata[key])
    except ValueError:
        raise ValueError(f"metadata {key}={metadata[key]!r} is not a JSON value") from None


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value  # anything else is refused by the validation


def _legacy(metadata: Mapping[str, str], dims: list[int | None]) -> InputConventions:
    """The conventions the exports wrote before the record existed (the module doc's old defaults)."""
    if len(dims) == 4:
        height, width = dims[2], dims[3]
        recorded = _json(metadata, "input_size", None)
        size = height if height and width else (recorded if _positive_int(recorded) else None)
        mean, std = _json(metadata, "mean", [0.5] * 3), _json(metadata, "std", [0.5] * 3)
        resize_size = _json(metadata, "resize_size", int(size / 0.875) if size else None)
        return InputConventions("nasnet", (0.0, 1.0), "RGB", "center_crop", not (height and width), size,
                                _tuple(mean), _tuple(std), resize_size, _json(metadata, "interpolation", "bilinear"))
    if metadata.get("framework") == "torchvision":
        fixed = _json(metadata, "fixed_size", None)
        short = min(fixed) if fixed else int(_json(metadata, "min_size", [800])[-1])
        longest = max(fixed) if fixed else int(_json(metadata, "max_size", 1333))
        return InputConventions("torchvision", (0.0, 1.0), "RGB", "in_graph", True, shortest_side=short,
                                longest_side=longest)
    order = "BGR" if "BGR" in metadata.get("input", "") else "RGB"
    return InputConventions("detectron2", (0.0, 255.0), order, "shortest_side", True,
                            shortest_side=int(_json(metadata, "min_size_test", 800)),
                            longest_side=int(_json(metadata, "max_size_test", 1333)))
