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
