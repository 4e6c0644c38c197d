"""Latency-aware rewards, with latency measured on the deployment runtime (onnxruntime on the CPU).

The reward of a candidate with held-out accuracy ``a`` and latency ``l`` is MnasNet's soft
constraint (Tan et al., 2019, Sec. 3): ``a x (l / target) ** w`` with ``w = -0.07`` by default, so a
cell twice as slow as the target gives up about 5% of its accuracy. The latency is that of the
*deployed* network, not of the small child: the candidate cells in an ``N @ F`` network at the
deployment input size (default NASNet-A mobile's 4 cells per stack, base width 44, 224 px,
ImageNet stem), exported to ONNX with the export module (verified), and timed in onnxruntime
(fastest of ``runs``, ``threads`` intra-op threads). Measurements are cached by genotype hash.

Measuring takes seconds per candidate, too slow for weight-sharing search, which scores many
cells per epoch. :meth:`LatencyModel.build_table` therefore times every op once at every input
shape the network gives it (a lookup table per op and shape, each op exported and timed alone),
and calibrates on measured networks what the ops alone do not capture (the stem, projections,
concatenations and head; ops running faster or slower inside a whole graph):
``latency = a + b x (sum of the ops) + c x (states concatenated)``, fitted by least squares with
``a, b, c >= 0``.
It then predicts further measured networks and keeps the table only when the mean error is
within ``max_table_error`` (10%); the errors are stored with the table and logged.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from nasnet_backbones.atomic import write_atomic
from nasnet_backbones.genotype import Genotype
from nasnet_backbones.builder import build_model
from nasnet_backbones.nasnet import cell_links, stack_config
from nasnet_backbones.ops import OpContext, build_op

from .space import SearchSpace

__all__ = ["LatencySettings", "LatencyModel", "DEVICES"]

logger = logging.getLogger(__name__)

DEVICES = ("onnxruntime-cpu",)
CACHE_FILE = "latency_cache.json"
TABLE_FILE = "latency_table.json"


@dataclass(frozen=True)
class LatencySettings:
    """What latency means for a search: the deployed network, the runtime and the target."""

    target_ms: float
    weight: float = -0.07
    device: str = "onnxruntime-cpu"
    cells: int = 4  # N of the deployed network
    filters: int = 44  # its base width
    img_size: int = 224
    stem: str = "imagenet"
    threads: int = 1
    runs: int = 20
    max_table_error: float = 0.10

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"unknown latency device {self.device!r}; available: {', '.join(DEVICES)}")
        if not self.target_ms > 0:
            raise ValueError(f"--latency-target must be a positive number of milliseconds, got {self.target_ms}")
        if self.weight > 0:
            raise ValueError(f"--latency-weight must be <= 0 (a slower cell must not score higher), got {self.weight}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def reward(self, accuracy: float, latency_ms: float) -> float:
        return accuracy * (latency_ms / self.target_ms) ** self.weight


def _fastest_ms(path: Path, shape: tuple[int, ...], threads: int, runs: int) -> float:
    """The fastest of ``runs`` timed inferences (after 3 warm-up runs), in ms.

    The fastest run, not the median: on a shared machine the median of 20 runs of the same network
    moved by +-12% between sessions here, the fastest by 2%; ranking cells needs the stable number.
    """
    import onnxruntime as ort

    from export.bench import timed

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return 1000 * min(timed(lambda: session.run(None, {name: x}), runs, warmup=3))


def _nonnegative_fit(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0 (none of the costs can be negative; on a few noisy
    networks an unconstrained fit can turn a cost negative and invert the ranking). Exact for a few
    columns: the best unconstrained fit over every subset of columns whose coefficients are all >= 0."""
    columns = design.shape[1]
    best, best_error = np.zeros(columns), float(np.sum(target**2))
    for subset in range(1, 2**columns):
        chosen = [c for c in range(columns) if subset >> c & 1]
        coef, *_ = np.linalg.lstsq(design[:, chosen], target, rcond=None)
        if (coef < 0).any():
            continue
        error = float(np.sum((design[:, chosen] @ coef - target) ** 2))
        if error < best_error:
            best, best_error = np.zeros(columns), error
            best[chosen] = coef
    return best


class LatencyModel:
    """Latency of candidates in the deployed network: measured (cached) or from a calibrated table."""

    def __init__(self, settings: LatencySettings, space: SearchSpace, folder: str | Path | None = None) -> None:
        self.settings, self.space = settings, space
        self.folder = Path(folder) if folder is not None else None
        self.cache: dict[str, float] = {}
        self.table: dict[str, Any] | None = None
        if self.folder is not None and (self.folder / CACHE_FILE).is_file():
            self.cache = json.loads((self.folder / CACHE_FILE).read_text())
        if self.folder is not None and (self.folder / TABLE_FILE).is_file():
            self.table = json.loads((self.folder / TABLE_FILE).read_text())
        s = settings
        self.config = stack_config(s.cells, s.filters, s.stem)
        self.num_classes = 1000 if s.stem == "imagenet" else 10
        self._shapes: list[dict[str, Any]] | None = None

    # -- measurement -------------------------------------------------------------------------

    def _network(self, genotype: Genotype):
        s = self.settings
        return build_model(genotype, cells=s.cells, filters=s.filters, stem=s.stem,
                           num_classes=self.num_classes, img_size=s.img_size).eval()

    def measure(self, genotype: Genotype) -> float:
        """Export the deployed network with ``genotype``'s cells and time it in onnxruntime (ms)."""
        key = genotype.hash()
        if key not in self.cache:
            from export.onnx_export import export_classifier

            s = self.settings
            with tempfile.TemporaryDirectory(prefix="nasnet-latency-") as tmp:
                path = Path(tmp) / "candidate.onnx"
                export_classifier(self._network(genotype), path, input_size=s.img_size, batch=1)
                self.cache[key] = _fastest_ms(path, (1, 3, s.img_size, s.img_size), s.threads, s.runs)
            self._write(CACHE_FILE, self.cache)
        return self.cache[key]

    def latency(self, genotype: Genotype) -> float:
        """From the table when it was accurate enough, else measured."""
        if self.table is not None and self.table["used"]:
            return self.predict(genotype)
        return self.measure(genotype)

    def reward(self, genotype: Genotype, accuracy: float) -> tuple[float, float]:
        """(latency-aware reward, latency in ms)."""
        latency = self.latency(genotype)
        return self.settings.reward(accuracy, latency), latency

    def _write(self, name: str, data: Any) -> None:
        if self.folder is not None:
            write_atomic(self.folder / name, lambda p: p.write_text(json.dumps(data, indent=1) + "\n"))

    # -- the lookup table -------------------------------------------------------------------

    def _op_shapes(self) -> list[dict[str, Any]]:
        """Per cell: the (input channels, stride, input size) an op sees for each input kind."""
        if self._shapes is not None:
            return self._shapes
        c = self.config
        model_rows = self._network(self.space.decode([0] * self.space.num_decisions)).stage_shapes(self.settings.img_size)
        sizes = [row[3] for row in model_rows]
        stem_channels = model_rows[0][1]
        shapes = []
        for pos, link in enumerate(cell_links(c), start=1):
            stride = 2 if link.reduction else 1
            h_in, h_out = sizes[link.input], sizes[pos]
            raw = stem_channels if link.prev is None else link.filters
            shapes.append({"reduction": link.reduction, "filters": link.filters,
                           "x0": (link.filters, stride, h_in), "x1": (raw, stride, h_in), "block": (link.filters, 1, h_out)})
        self._shapes = shapes
        return shapes

    @staticmethod
    def _entry(op: str, c_in: int, c_out: int, stride: int, size: int) -> str:
        return f"{op}|{c_in}|{c_out}|{stride}|{size}"

    def _ops_sum(self, genotype: Genotype, entries: dict[str, float]) -> float:
        total = 0.0
        for shape in self._op_shapes():
            spec = genotype.reduce if shape["reduction"] else genotype.normal
            for block in spec.blocks:
                for op, i in zip(block.ops, block.inputs):
                    c_in, stride, size = shape["x0" if i == 0 else "x1" if i == 1 else "block"]
                    total += entries[self._entry(op, c_in, shape["filters"], stride, size)]
        return total

    def _concat_count(self, genotype: Genotype) -> int:
        return sum(len((genotype.reduce if s["reduction"] else genotype.normal).concat) for s in self._op_shapes())

    def op_cost(self, genotype: Genotype) -> float:
        """The table's measured per-op times summed over ``genotype``'s deployed network (ms),
        before calibration."""
        if self.table is None:
            raise RuntimeError("no latency table; build one with build_table()")
        return self._ops_sum(genotype, self.table["entries"])

    def predict(self, genotype: Genotype) -> float:
        t = self.table
        return t["intercept"] + t["ops_scale"] * self.op_cost(genotype) + t["per_concat"] * self._concat_count(genotype)

    def build_table(self, calibration: int = 6, validation: int = 6, seed: int = 0) -> dict[str, Any]:
        """Time every op at every shape, calibrate on measured networks, report the prediction error."""
        from tqdm import tqdm

        from export.onnx_export import export_module

        s = self.settings
        ctx = OpContext(self.config.padding, self.config.bn_eps, self.config.bn_momentum)
        wanted = {(op, *shape[kind][:2], shape["filters"], shape[kind][2])
                  for shape in self._op_shapes() for kind in ("x0", "x1", "block") for op in self.space.ops}
        entries: dict[str, float] = {}
        with tempfile.TemporaryDirectory(prefix="nasnet-latency-ops-") as tmp:
            for op, c_in, stride, c_out, size in tqdm(sorted(wanted), desc="timing ops", unit="op", leave=False):
                module = build_op(op, c_in, c_out, stride, ctx).eval()
                key = self._entry(op, c_in, c_out, stride, size)
                if isinstance(module, nn.Identity):  # the identity op: nothing runs
                    entries[key] = 0.0
                    continue
                path = Path(tmp) / "op.onnx"
                export_module(module, path, size, in_chans=c_in)
                entries[key] = _fastest_ms(path, (1, c_in, size, size), s.threads, s.runs)
        rng = np.random.default_rng(seed)
        genotypes = [self.space.decode(self.space.sample(rng)) for _ in range(calibration + validation)]
        measured = [self.measure(g) for g in tqdm(genotypes, desc="measuring networks", unit="net", leave=False)]
        ops = np.array([self._ops_sum(g, entries) for g in genotypes])
        concat = np.array([self._concat_count(g) for g in genotypes], dtype=np.float64)
        fit = slice(0, calibration)
        design = np.stack([np.ones(calibration), ops[fit], concat[fit]], 1)
        intercept, ops_scale, per_concat = _nonnegative_fit(design, np.array(measured)[fit])
        predicted = intercept + ops_scale * ops + per_concat * concat
        errors = np.abs(predicted - np.array(measured)) / np.array(measured)
        held_out = errors[calibration:] if validation else errors
        self.table = {"settings": s.to_dict(), "entries": entries, "intercept": float(intercept),
                      "ops_scale": float(ops_scale), "per_concat": float(per_concat), "calibration_error": float(errors[fit].mean()),
                      "mean_error": float(held_out.mean()), "max_error": float(held_out.max()),
                      "validation_networks": validation, "used": bool(held_out.mean() <= s.max_table_error)}
        self._write(TABLE_FILE, self.table)
        logger.info("latency table: %d op shapes; predicts %d held-out networks with mean error %.1f%% (max %.1f%%): "
                    "%s", len(entries), validation, 100 * self.table["mean_error"], 100 * self.table["max_error"],
                    "used" if self.table["used"] else f"not used (over {100 * s.max_table_error:.0f}%), measuring each cell")
        return self.table
