"""The four packages stack: nasnet_backbones (1) <- detection (2) <- export (3) <- search (4).

A module may import its own floor and the floors below, never one above, not even lazily inside a
function; and no package imports ``tests`` or ``benchmarks`` (scripts, not packages). The check
reads every module's source with ``ast``, so it sees the imports that only run in one branch.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {"nasnet_backbones": 1, "detection": 2, "export": 3, "search": 4}
NOT_PACKAGES = {"tests", "benchmarks"}  # anything may live there, but no package may import it
# Modules at the repository root that other tools import, with the floor they may reach: torch.hub
# imports hubconf.py, which serves the models alone.
ROOT_MODULES = {"hubconf.py": 1}


def _module_name(path: Path) -> tuple[str, str]:
    """``(module, package)`` for a file under ROOT: ``export/bench.py`` -> ``("export.bench", "export")``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def _imports(path: Path) -> list[tuple[int, str, str]]:
    """Every import in ``path``, anywhere in the file: ``(line, absolute module, source text)``.

    Relative imports are resolved against the module's package; ``importlib.import_module`` and
    ``__import__`` calls with a constant name count too.
    """
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    _, package = _module_name(path)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Call)):
            continue
        text = ast.get_source_segment(source, node) or "" if not isinstance(node, ast.Call) else ""
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, text) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                assert base and all(base), f"{path}:{node.lineno}: relative import above the top package: {text}"
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from . import x`` may name submodules: each one is an import of ``module.x``
            names = [f"{module}.{alias.name}" for alias in node.names] if node.module is None else [module]
            found += [(node.lineno, name, text) for name in names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value, ast.get_source_segment(source, node) or ""))
    return sorted(found, key=lambda item: item[0])


def _package_modules() -> list[Path]:
    return sorted([p for package in FLOORS for p in (ROOT / package).rglob("*.py")] + [ROOT / m for m in ROOT_MODULES])


def _violations(path: Path) -> list[str]:
    top = path.relative_to(ROOT).parts[0]
    floor = FLOORS[top] if top in FLOORS else ROOT_MODULES[top]
    problems = []
    for line, module, text in _imports(path):
        target = module.split(".")[0]
        where = f"{path.relative_to(ROOT)}:{line}: {' '.join(text.split())}"
        if target in NOT_PACKAGES:
            problems.append(f"{where}  ({top} imports {target}/, which is not a package)")
        elif FLOORS.get(target, 0) > floor:
            problems.append(f"{where}  ({top} is floor {floor}, {target} is floor {FLOORS[target]})")
    return problems


def test_the_checker_sees_every_kind_of_import(tmp_path, monkeypatch):
    probe = tmp_path / "detection" / "torchvision" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        "import search.run\n"
        "from export import bench\n"
        "def late():\n"
        "    from ..command import add_parser\n"
        "    from . import ssdlite, backbone\n"
        "class Lazy:\n"
        "    def method(self):\n"
        "        import importlib\n"
        "        return importlib.import_module('export.quantize')\n"
        "from tests import helpers\n"
        "from nasnet_backbones import genotypes\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert sorted((line, module) for line, module, _ in _imports(probe)) == [
        (1, "search.run"), (2, "export"), (4, "detection.command"), (5, "detection.torchvision.backbone"),
        (5, "detection.torchvision.ssdlite"), (8, "importlib"), (9, "export.quantize"), (10, "tests"),
        (11, "nasnet_backbones")]
    problems = _violations(probe)
    assert [p.split(":", 2)[1] for p in problems] == ["1", "2", "9", "10"], problems
    assert problems[0] == "detection/torchvision/probe.py:1: import search.run  (detection is floor 2, search is floor 4)"
    assert problems[2].startswith("detection/torchvision/probe.py:9: importlib.import_module('export.quantize')")
    assert problems[3].endswith("(detection imports tests/, which is not a package)")


def test_no_package_imports_a_higher_floor():
    modules = _package_modules()
    assert len(modules) > 50 and all(p.parts[-2] != "__pycache__" for p in modules)
    problems = [problem for path in modules for problem in _violations(path)]
    assert not problems, "imports that go up a floor (or into tests/benchmarks):\n" + "\n".join(problems)


def test_hubconf_is_checked_as_floor_one(tmp_path, monkeypatch):
    assert ROOT / "hubconf.py" in _package_modules() and _violations(ROOT / "hubconf.py") == []
    assert "nasnet_backbones" in {module.split(".")[0] for _, module, _ in _imports(ROOT / "hubconf.py")}
    probe = tmp_path / "hubconf.py"
    probe.write_text("import nasnet_backbones\nfrom detection.torchvision import DETECTOR_KINDS\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _violations(probe) == [
        "hubconf.py:2: from detection.torchvision import DETECTOR_KINDS  (hubconf.py is floor 1, detection is floor 2)"]


def test_importing_the_model_package_loads_no_higher_floor_dependency():
    # torchvision's own __init__ imports torchvision.models.detection, so the model package (which
    # needs torchvision's transforms and datasets) may hold it, but only as much as torchvision does
    code = ("import json, sys, torchvision; before = set(sys.modules); import nasnet_backbones, nasnet_backbones.cli; "
            "print(json.dumps([sorted(before), sorted(sys.modules)]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    with_torchvision, loaded = map(set, json.loads(done.stdout.strip().splitlines()[-1]))
    upstairs = ["detectron2", "onnx", "onnxruntime", "ray", "detection", "export", "search"]
    assert [m for m in upstairs if m in loaded] == []
    assert sorted(m for m in loaded - with_torchvision if m.startswith("torchvision.models.detection")) == []
    assert "torch.jit.script" not in done.stderr and "Warning" not in done.stderr, done.stderr


def test_bench_child_process_loads_no_torch():
    """``nasnet bench`` times each onnxruntime backend in a child that runs export/bench.py as a
    script; torch there would inflate the peak memory it reports (and its start-up)."""
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "export" / "bench.py"
    code = ("import runpy, sys; runpy.run_path(sys.argv[1], run_name='bench_child_probe'); "
            "print(sorted(m for m in ('torch', 'nasnet_backbones', 'detectron2') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, str(bench)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
