"""Helpers shared by the tests (imported as ``from helpers import ...``): reference-model set-up,
CIFAR-10 written in its official format, a search executor that scores children at once, and
the bad-input (fuzz) helpers that run ``nasnet`` in-process and check it refused cleanly.
Fixtures live in conftest.py; everything a test imports by name lives here."""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["randomize_batchnorm", "write_cifar", "ScriptedExecutor", "Result", "run_cli", "expect_clean_error", "snapshot"]


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial statistics, so eval-mode comparisons exercise them."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


# -- CIFAR-10 in its real python-pickle format ------------------------------------------------

def write_cifar(root: Path, per_batch: int = 8) -> dict[str, str]:
    """Write cifar-10-batches-py as the official archive lays it out; return each file's md5."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    md5 = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        entry = {"batch_label": name, "labels": labels,
                 "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "filenames": [f"{name}_{i}.png" for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
            "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    for path in folder.iterdir():
        md5[path.name] = hashlib.md5(path.read_bytes()).hexdigest()
    return md5


class ScriptedExecutor:
    """A search executor that scores each child at once with ``score(genotype, key)`` instead of
    training it; ``crash_after`` raises after that many results, as a killed search would stop."""

    def __init__(self, score, crash_after: int | None = None) -> None:
        self.score, self.crash_after = score, crash_after
        self.queue: list = []
        self.evaluated: list[str] = []

    def submit(self, key, genotype, settings, seed):
        self.queue.append((key, genotype, seed))

    def wait(self):
        if self.crash_after is not None and len(self.evaluated) >= self.crash_after:
            raise KeyboardInterrupt("simulated crash")
        key, genotype, seed = self.queue.pop(0)
        self.evaluated.append(genotype.hash())
        return [(key, {"reward": self.score(genotype, key), "params": 1, "madds": 1, "wall_time": 0.0, "seed": seed,
                       "status": "ok"})]

    @property
    def pending(self):
        return len(self.queue)

    def shutdown(self):
        self.queue.clear()


# -- running the CLI in-process (the fuzz tests) ------------------------------------------------

@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(capsys, *argv: str) -> Result:
    """``nasnet ARGV`` in this process; argparse's ``SystemExit`` becomes the exit code. An
    exception the CLI does not catch propagates, so the test shows it as the traceback a user would see."""
    from nasnet_backbones.cli import main  # here, so that conftest's import of this module stays light

    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def expect_clean_error(capsys, *argv: str, names: tuple[str, ...] | list[str] = (), code: int = 2) -> str:
    """Run the command, assert it failed with ``code``, printed no traceback, and that its stderr
    names every string in ``names`` (a file, a flag, the cause). Returns stderr."""
    result = run_cli(capsys, *argv)
    assert result.code == code, f"exit {result.code}, stderr: {result.err}"
    assert "Traceback" not in result.err and "Traceback" not in result.out, result.err
    for name in names:
        assert str(name) in result.err, f"{name!r} not in: {result.err}"
    return result.err


def snapshot(folder: str | Path) -> dict[str, str]:
    """Every file below ``folder`` with its sha256, to assert that a refused command lost or
    changed nothing (and left no temporary behind)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
