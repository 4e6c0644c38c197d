import json

from nasnet_backbones import genotypes
from nasnet_backbones.cli import main


def test_info_table(capsys):
    assert main(["info", "--model", "nasnet_a_mobile"]) == 0
    out = capsys.readouterr().out
    assert "parameters: 5.290M (paper: 5.3M)" in out
    assert "mult-adds:  563.6M (paper: 564M)" in out
    assert "reduction_1  704       32      7x7" in out
    assert "stride32  32      1056      7x7" in out


def test_info_json_at_other_size(capsys):
    assert main(["info", "--model", "nasnet_a_mobile", "--input-size", "256", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["input_size"] == 256 and info["params"] == 5289978
    assert [f["stride"] for f in info["features"]] == [2, 4, 8, 16, 32]
    assert info["features"][-1]["size"] == 8 and info["features"][-1]["channels"] == 1056
    assert info["paper"]["mult_adds_m"] == 564


def test_info_from_genotype_file(tmp_path, capsys):
    path = tmp_path / "cell.json"
    genotypes.PNASNET_5.to_json(path)
    assert main(["info", "--genotype", str(path), "--cells", "2", "--filters", "16", "--stem", "cifar", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["genotype"] == "PNASNet-5" and info["input_size"] == 32
    assert [f["stride"] for f in info["features"]] == [1, 2, 4]


def test_info_list(capsys):
    assert main(["info", "--list"]) == 0
    assert "nasnet_a_7_1920" in capsys.readouterr().out


def test_bad_input_gets_one_clear_error(tmp_path, capsys):
    assert main(["info", "--model", "nasnet_a_mobil"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nasnet_a_mobil'" in err and "Did you mean nasnet_a_mobile" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1, "normal": {"blocks": [{"inputs": [0, 5], "ops": ["identity", "identity"]}], "concat": [2]}, "reduce": {"blocks": [], "concat": []}}')
    assert main(["info", "--genotype", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "normal.blocks[0].inputs[1]: input index 5 out of range" in err
    assert "Traceback" not in err


def test_console_script_installed():
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "nasnet"  # installed by `make setup` beside the interpreter
    assert exe.exists(), "pip install -e . should install the nasnet console script"
    done = subprocess.run([str(exe), "info", "--list"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "nasnet_a_4_1056" in done.stdout


COMMANDS = ["bench", "demo", "detect", "draw", "eval", "export", "info", "predict", "search", "train"]


def test_help_lists_every_subcommand(capsys):
    from importlib.metadata import entry_points

    import pytest

    registered = sorted(ep.name for ep in entry_points(group="nasnet.commands") if ep.dist.name == "nasnet-backbones")
    assert registered == COMMANDS, "reinstall (pip install -e .); is a stale nasnet_backbones.egg-info shadowing it?"
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("    ") and line.split()[0] in COMMANDS]
    assert listed == COMMANDS  # alphabetical, each once
    assert "unavailable" not in out


def _fake_distribution(root):
    """A real installed distribution on ``root``: its ``nasnet.commands`` entry points name a module
    whose dependency is missing and a command that fails with the model package's CommandError."""
    info = root / "fake_nasnet_commands-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-nasnet-commands\nVersion: 0.0.1\n"
                                   "Requires-Dist: fake_missing_dependency>=1.2\n")
    (info / "entry_points.txt").write_text("[nasnet.commands]\nbroken = fake_nasnet_commands.broken:add_parser\n"
                                           "failing = fake_nasnet_commands.failing:add_parser\n")
    package = root / "fake_nasnet_commands"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "broken.py").write_text("import fake_missing_dependency  # not installed\n\n\ndef add_parser(subparsers):\n"
                                       "    subparsers.add_parser('broken')\n")
    (package / "failing.py").write_text(
        "from nasnet_backbones.errors import CommandError\n\n\n"
        "class CheckFailed(CommandError):\n    pass\n\n\n"
        "def fail(args):\n    raise CheckFailed('the graph computes something else (max abs error 0.5)')\n\n\n"
        "def add_parser(subparsers):\n    subparsers.add_parser('failing', help='always fails').set_defaults(func=fail)\n")


def test_a_command_whose_package_fails_to_import_is_listed_and_says_why(tmp_path, monkeypatch, capsys):
    import sys

    import pytest

    _fake_distribution(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(SystemExit):
            main(["--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert "broken (unavailable: No module named 'fake_missing_dependency')" in out
        assert "failing always fails" in out and all(name in out for name in COMMANDS)

        for argv in (["broken"], ["broken", "train", "--config-file", "x.yaml", "-o", "out"], ["-v", "broken"]):
            assert main(argv) == 2
            captured = capsys.readouterr()
            assert captured.err.splitlines() == [
                "nasnet broken: error: unavailable, ModuleNotFoundError: No module named 'fake_missing_dependency' "
                "(pip install 'fake_missing_dependency>=1.2')"], captured.err
        # a failed check (a CommandError from any floor) is one line too; -v shows the traceback
        assert main(["failing"]) == 2
        assert capsys.readouterr().err == "nasnet failing: error: the graph computes something else (max abs error 0.5)\n"
        with pytest.raises(Exception, match="max abs error 0.5"):
            main(["-v", "failing"])
        # an ordinary command still refuses arguments it does not know
        with pytest.raises(SystemExit) as done:
            main(["info", "--list", "--no-such-option"])
        assert done.value.code == 2 and "unrecognized arguments: --no-such-option" in capsys.readouterr().err
    finally:
        for name in [m for m in sys.modules if m.startswith("fake_nasnet_commands")]:
            del sys.modules[name]


def test_a_command_imports_only_its_own_package(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    _fake_distribution(tmp_path)
    exe = Path(sys.executable).parent / "nasnet"
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([str(exe), "broken", "--anything"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().endswith("(pip install 'fake_missing_dependency>=1.2')"), done.stderr
    code = ("import json, sys; from nasnet_backbones.cli import main; code = main(['info', '--list']); "
            "print(json.dumps([code, [m for m in ('detectron2', 'detection', 'export', 'search', 'ray') if m in sys.modules]]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [0, []], done.stderr


def test_old_option_spellings_still_work_and_say_what_to_type(capsys):
    """0.1 keeps --out / --img-size / --image-size / predict's -o, each with one warning line."""
    from nasnet_backbones.cli import build_parser

    parser = build_parser()
    cases = [
        (["search", "--out", "runs/x", "--img-size", "8"], {"out": "runs/x", "child_img_size": 8},
         ["--out is deprecated", "use --output-dir", "--img-size is deprecated", "use --input-size"]),
        (["detect", "make-synthetic", "--out", "shapes"], {"out": "shapes"}, ["use --output-dir"]),
        (["detect", "predict", "a.png", "--config-file", "c.yaml", "-o", "drawn"], {"output": "drawn"},
         ["-o is deprecated", "use --output-dir"]),
        (["export", "detector", "--config-file", "c.yaml", "--image-size", "64", "96", "-o", "d.onnx"],
         {"image_size": [64, 96], "output": "d.onnx"}, ["--image-size is deprecated", "use --input-size"]),
        (["eval", "cifar10", "--model", "nasnet_a_mobile", "--data", "d", "--img-size", "32"], {"img_size": 32},
         ["use --input-size"]),
    ]
    for argv, expected, warnings in cases:
        args = parser.parse_args(argv)
        assert {key: getattr(args, key) for key in expected} == expected, argv
        err = capsys.readouterr().err
        assert all(w in err for w in warnings), (argv, err)
    # the new spellings set the same values, silently; a required one is still required
    args = parser.parse_args(["search", "--output-dir", "runs/x", "--input-size", "8"])
    assert (args.out, args.child_img_size) == ("runs/x", 8) and "deprecated" not in capsys.readouterr().err
    try:
        parser.parse_args(["detect", "make-synthetic"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "--output-dir is required" in capsys.readouterr().err
