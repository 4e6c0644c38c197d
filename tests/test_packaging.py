"""What ``pip install nasnet-backbones[...]`` installs, checked on a wheel built by pip from a copy of
the sources: the base requirements (torch, torchvision, numpy, Pillow, safetensors), the extras of
each floor, the licence, the package data and the entry points; every third-party import of a floor
declared in the base or that floor's extra; a model-only install at work with every other
installed package made unimportable; and the CLI naming the extra to install when a subcommand's
dependency is missing.
"""

from __future__ import annotations

import ast
import configparser
import email.parser
import json
import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import EntryPoint, distribution, entry_points, packages_distributions, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from not_installed import BASE_DISTRIBUTIONS, OWN_PACKAGES, ROOT, non_base_modules, run_python

from nasnet_backbones.cli import COMMAND_GROUP, IMPORT_NAME_TO_DISTRIBUTION, install_hint

FLOOR_EXTRAS = {  # the extras whose requirements a floor's modules may import (besides the base)
    "nasnet_backbones": ("tools", "timm"),
    "detection": ("detection",),
    "export": ("export", "detection"),  # exporting a detectron2 detector needs [detection] too
    "search": ("search",),
}
EXTRAS = {"tools", "detection", "export", "timm", "search", "all", "test"}
COMMANDS = ["bench", "demo", "detect", "draw", "eval", "export", "info", "predict", "search", "train"]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds from a copy of the sources (building in the checkout would leave a
    ``*.egg-info`` there that hides the installed entry points from everything run in it)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for package in OWN_PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("nasnet_backbones-*.whl")
    return built


def _dist_info(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (path,) = [n for n in archive.namelist() if re.fullmatch(rf"nasnet_backbones-[^/]+\.dist-info/{name}", n)]
        return archive.read(path).decode("utf-8")


def _requirements(metadata) -> dict[str | None, list[Requirement]]:
    """Requires-Dist by extra (None: the base)."""
    by_extra: dict[str | None, list[Requirement]] = {}
    for text in metadata.get_all("Requires-Dist"):
        requirement = Requirement(text)
        extra = re.search(r'extra == "([^"]+)"', str(requirement.marker)) if requirement.marker else None
        by_extra.setdefault(extra.group(1) if extra else None, []).append(requirement)
    return by_extra


def _expand(by_extra: dict[str | None, list[Requirement]], extra: str) -> set[str]:
    """Every distribution ``extra`` installs, following ``nasnet-backbones[other]`` references."""
    found: set[str] = set()
    for requirement in by_extra[extra]:
        if _canonical(requirement.name) == "nasnet-backbones":
            for inner in requirement.extras:
                found |= _expand(by_extra, inner)
        else:
            found.add(_canonical(requirement.name))
    return found


def test_base_requirements_are_the_five_model_packages_with_versions(wheel):
    metadata = email.parser.Parser().parsestr(_dist_info(wheel, "METADATA"))
    base = _requirements(metadata)[None]
    assert sorted(_canonical(r.name) for r in base) == sorted(BASE_DISTRIBUTIONS)
    for requirement in base:  # a lower bound each, and what this environment runs satisfies it
        assert requirement.specifier and not requirement.marker and not requirement.extras, requirement
        assert requirement.specifier.contains(version(requirement.name)), (requirement, version(requirement.name))
    assert metadata["Name"] == "nasnet-backbones" and metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"] and Version(metadata["Metadata-Version"]) >= Version("2.4")


def test_each_floor_has_an_extra_and_all_is_everything(wheel):
    metadata = email.parser.Parser().parsestr(_dist_info(wheel, "METADATA"))
    by_extra = _requirements(metadata)
    assert set(metadata.get_all("Provides-Extra")) == EXTRAS == set(by_extra) - {None}
    contents = {extra: _expand(by_extra, extra) for extra in EXTRAS}
    assert contents["tools"] == {"tqdm", "tensorboard", "fvcore", "matplotlib"}
    assert {"sal-detectron2", "fvcore", "iopath", "pycocotools", "panopticapi-lite", "opencv-python-headless",
            "pyyaml", "setuptools"} <= contents["detection"]
    assert contents["export"] == {"onnx", "onnxruntime", "onnxscript"}
    assert contents["timm"] == {"timm"}
    # search trains children with the trainer, times cells through export, runs Ray; its demo drives detect
    assert contents["search"] == contents["tools"] | contents["detection"] | contents["export"] | {"ray"}
    assert [r.extras for r in by_extra["search"] if r.name == "ray"] == [{"default"}]
    assert contents["all"] == set().union(*(contents[e] for e in EXTRAS - {"all", "test"}))
    assert not contents["all"] & {_canonical(r.name) for r in by_extra[None]}
    assert {"pytest", "hypothesis", "timm", "pretrainedmodels"} <= contents["test"]


def test_every_third_party_import_of_a_floor_is_declared_for_it(wheel):
    """Each floor's imports, lazy ones included, come from the base or its own extras: a new
    ``import scipy`` in export/ fails here until pyproject.toml declares it."""
    by_extra = _requirements(email.parser.Parser().parsestr(_dist_info(wheel, "METADATA")))
    base = {_canonical(r.name) for r in by_extra[None]}
    providers = packages_distributions()
    undeclared = []
    for package, extras in FLOOR_EXTRAS.items():
        allowed = base.union(*(_expand(by_extra, e) for e in extras))
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                else:
                    continue
                for top in {name.split(".")[0] for name in names} - set(sys.stdlib_module_names) - OWN_PACKAGES:
                    dists = {_canonical(d) for d in providers.get(top, [])}
                    if not dists & allowed:
                        undeclared.append(f"{path.relative_to(ROOT)}:{node.lineno}: {top} "
                                          f"(from {sorted(dists) or 'no installed distribution'}; allowed: {extras})")
    assert not undeclared, "imports that pyproject.toml does not declare for their floor:\n" + "\n".join(undeclared)


def test_the_cli_knows_the_distribution_behind_each_import_name():
    # the names that differ, as the installed metadata says (the CLI needs them when a package is missing)
    providers = packages_distributions()
    for module, dist in IMPORT_NAME_TO_DISTRIBUTION.items():
        assert _canonical(dist) in {_canonical(d) for d in providers[module]}, module


def test_wheel_holds_the_licence_and_package_data(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (licence,) = [n for n in names if re.fullmatch(r"nasnet_backbones-[^/]+\.dist-info/licenses/LICENSE", n)]
        text = archive.read(licence).decode("utf-8")
    assert text == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "Copyright 2026 nasnet-backbones developers" in text
    data = {p.relative_to(ROOT).as_posix() for pattern in ("nasnet_backbones/data/*.tsv", "detection/configs/*.yaml",
                                                           "detection/configs/*.py") for p in ROOT.glob(pattern)}
    assert any(d.endswith(".tsv") for d in data) and any(d.endswith(".yaml") for d in data)
    assert data | {"nasnet_backbones/py.typed"} <= names, sorted(data - names)
    modules = {p.relative_to(ROOT).as_posix() for package in OWN_PACKAGES for p in (ROOT / package).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules <= names, sorted(modules - names)
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "scripts/")) or n == "hubconf.py"]


def test_wheel_entry_points_are_the_installed_ones(wheel):
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str
    parser.read_string(_dist_info(wheel, "entry_points.txt"))
    assert dict(parser["console_scripts"]) == {"nasnet": "nasnet_backbones.cli:main"}
    commands = {name: value.strip() for name, value in parser[COMMAND_GROUP].items()}
    assert sorted(commands) == COMMANDS
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for value in commands.values():  # each names a module the wheel holds
        module = EntryPoint(name="", value=value, group=COMMAND_GROUP).module
        assert f"{module.replace('.', '/')}.py" in names, value
    # the editable install the tests run against was made from this pyproject (pip install -e . after editing it)
    installed = {ep.name: ep.value for ep in entry_points(group=COMMAND_GROUP) if ep.dist.name == "nasnet-backbones"}
    assert installed == commands
    installed_extras = set(distribution("nasnet-backbones").metadata.get_all("Provides-Extra"))
    assert installed_extras == EXTRAS, "reinstall the editable package: pip install --no-deps -e ."


@pytest.mark.parametrize(("command", "missing", "expected"), [
    ("detect", "detectron2", "pip install 'nasnet-backbones[detection]'"),
    ("detect", "cv2", "pip install 'nasnet-backbones[detection]'"),
    ("export", "onnxruntime", "pip install 'nasnet-backbones[export]'"),
    ("export", "detectron2", "pip install 'nasnet-backbones[detection]'"),  # a detectron2 detector's export
    ("bench", "onnx", "pip install 'nasnet-backbones[export]'"),
    ("search", "ray", "pip install 'nasnet-backbones[search]'"),
    ("search", "tqdm", "pip install 'nasnet-backbones[search]'"),
    ("demo", "detectron2", "pip install 'nasnet-backbones[search]'"),
    ("train", "tensorboard", "pip install 'nasnet-backbones[tools]'"),
    ("info", "fvcore", "pip install 'nasnet-backbones[tools]'"),
    ("draw", "matplotlib", "pip install 'nasnet-backbones[tools]'"),
    ("predict", "timm", "pip install 'nasnet-backbones[timm]'"),
    ("predict", "safetensors", "pip install 'safetensors>=0.4'"),  # a base requirement
    ("eval", "not_a_dependency", "reinstall nasnet-backbones with its dependencies"),
])
def test_install_hint_names_the_extra_of_the_command(command, missing, expected):
    (ep,) = [ep for ep in entry_points(group=COMMAND_GROUP, name=command) if ep.dist.name == "nasnet-backbones"]
    assert install_hint(ep, ModuleNotFoundError(f"No module named {missing!r}", name=f"{missing}.sub")) == expected


def test_model_only_install_builds_runs_saves_and_loads(tmp_path):
    """With every installed package outside the base's requirements unimportable (detectron2, onnx,
    ray, tqdm, matplotlib, fvcore, yaml, timm, ...): the package imports, builds a registered and a
    genotype model, runs them, and round-trips weights through .safetensors; ``nasnet predict``
    runs, and ``nasnet --help`` lists every command."""
    blocked = non_base_modules()
    assert {"detectron2", "onnx", "onnxruntime", "ray", "tqdm", "matplotlib", "fvcore", "yaml", "timm"} <= blocked
    code = """
import contextlib, io, json, sys
import torch
from PIL import Image
import nasnet_backbones as nb
from nasnet_backbones.cli import main

out = sys.argv[1]
torch.manual_seed(0)
model = nb.create_model("darts_v2_cifar").eval()
x = torch.randn(2, 3, 32, 32)
with torch.no_grad():
    logits = model(x)
nb.save_checkpoint(model, out + "/model.safetensors")
again = nb.create_model("darts_v2_cifar", pretrained=out + "/model.safetensors").eval()
with torch.no_grad():
    same = torch.equal(again(x), logits)
cell = nb.build_model(nb.genotypes.NASNET_A, cells=1, filters=8, stem="cifar", num_classes=3).eval()
with torch.no_grad():
    cell_shape = list(cell(x).shape)
upstairs = sorted(m for m in sys.modules if m.split(".")[0] in ("detection", "export", "search"))
Image.new("RGB", (40, 30), (200, 20, 20)).save(out + "/red.png")
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    predicted = main(["predict", out + "/red.png", "--model", "darts_v2_cifar", "--weights",
                      out + "/model.safetensors", "--json", "--topk", "2"])
    try:
        main(["--help"])
    except SystemExit as done:
        helped = done.code
print(json.dumps({"shape": list(logits.shape), "same": same, "cell": cell_shape, "predict": predicted,
                  "help": helped, "printed": printed.getvalue(),
                  "upstairs": upstairs}))
"""
    done = run_python(code, blocked=blocked, args=(str(tmp_path),))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["shape"] == [2, 10] and result["same"] is True and result["cell"] == [2, 3]
    assert result["predict"] == 0 and result["help"] == 0 and result["upstairs"] == []
    assert '"image"' in result["printed"] or "red.png" in result["printed"]
    listed = {line.split()[0]: line for line in result["printed"].splitlines() if line.startswith("    ")}
    assert set(COMMANDS) <= set(listed)
    assert "unavailable: No module named 'onnx'" in listed["export"] and "unavailable" not in listed["predict"]
    assert "Warning" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]


# Each command run with the base alone: exit 2 and one line naming the missing module and the extra.
_BASE_ONLY_RUNS = [
    (["export", "classifier", "--model", "darts_v2_cifar"], "onnx", "export"),
    (["bench"], "onnx", "export"),
    (["search"], "tqdm", "search"),
    (["demo"], "tqdm", "search"),
    (["eval", "cifar10"], "tqdm", "tools"),
    (["train", "cifar10"], "tqdm", "tools"),
    (["detect", "configs"], None, "detection"),  # yaml or detectron2, whichever detection imports first
    (["info", "--model", "darts_v2_cifar"], "fvcore", "tools"),
    (["draw", "nasnet_a", "-o", "{tmp}/cells.png"], "matplotlib", "tools"),
]

_RUN_EACH = """
import contextlib, io, json, sys
from nasnet_backbones.cli import main

results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as done:
            code = done.code
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def _error_lines(stderr: str) -> list[str]:
    """The error lines of ``stderr`` (and any traceback's first line). A progress bar left open by
    the failing command (search's) may stand before the error on its line: it is cut off."""
    return re.findall(r"nasnet \S+: error: [^\r\n]*|Traceback[^\r\n]*", stderr)


def test_a_missing_dependency_is_one_line_naming_the_module_and_the_extra(tmp_path):
    argvs = [[a.format(tmp=tmp_path) for a in argv] for argv, _, _ in _BASE_ONLY_RUNS]
    done = run_python(_RUN_EACH, blocked=non_base_modules(), args=(json.dumps(argvs),))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for (argv, module, extra), (code, stderr) in zip(_BASE_ONLY_RUNS, results):
        lines = _error_lines(stderr)
        assert code == 2 and len(lines) == 1, (argv, code, stderr)
        line = lines[0]
        assert line.startswith(f"nasnet {argv[0]}: error: ") and f"pip install 'nasnet-backbones[{extra}]'" in line, line
        assert re.search(rf"No module named '{module or '(yaml|detectron2)'}'", line), line
    assert not (tmp_path / "cells.png").exists()


def test_ray_or_onnxruntime_missing_stops_the_command_that_needs_it(tmp_path):
    """Both are imported only when needed: search starts, and says what to install when it reaches
    Ray; an export writes nothing when it cannot verify the graph in onnxruntime."""
    genotype = tmp_path / "cell.json"
    argvs = [["search", "--dataset", "synthetic", "--preset", "tiny", "--trials", "1", "--strategy", "random",
              "--output-dir", str(tmp_path / "search")],
             ["export", "classifier", "--genotype", str(genotype), "--cells", "1", "--filters", "8", "--stem", "cifar",
              "--random-weights", "-o", str(tmp_path / "cell.onnx")]]
    code = f"from nasnet_backbones import genotypes\ngenotypes.NASNET_A.to_json({str(genotype)!r})\n" + _RUN_EACH
    done = run_python(code, blocked={"ray", "onnxruntime"}, args=(json.dumps(argvs),))
    assert done.returncode == 0, done.stderr[-3000:]
    (search_code, search_err), (export_code, export_err) = json.loads(done.stdout.strip().splitlines()[-1])
    assert search_code == 2 and _error_lines(search_err) == [
        "nasnet search: error: ModuleNotFoundError: No module named 'ray' (pip install 'nasnet-backbones[search]')"]
    assert export_code == 2 and _error_lines(export_err) == [
        "nasnet export: error: ModuleNotFoundError: No module named 'onnxruntime' (pip install 'nasnet-backbones[export]')"]
    assert not (tmp_path / "cell.onnx").exists() and not list(tmp_path.glob("*.onnx*"))
