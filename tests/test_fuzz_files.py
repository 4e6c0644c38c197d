"""Fuzz cases for the shared file machinery: atomic writes, the run-directory lock, and the CLI's
one-line report of file-system errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import expect_clean_error
from nasnet_backbones.atomic import atomic_target, write_atomic
from nasnet_backbones.runlock import RunDirectoryLocked, run_lock


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device", str(tmp))

    with pytest.raises(OSError):
        write_atomic(target, broken)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_two_writers_never_share_a_temporary(tmp_path):
    target = tmp_path / "log.txt"
    with atomic_target(target) as first, atomic_target(target) as second:
        assert first != second
        first.write_text("a")
        second.write_text("b")
    assert target.read_text() == "a"  # the outer block finishes last and wins
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.txt"]


def test_temporary_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "model.onnx"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child.kill()
    child.wait()
    stale = tmp_path / f"model.onnx.{child.pid}-abcdef.tmp"
    stale.write_bytes(b"x" * 100)
    alive = tmp_path / f"model.onnx.{os.getpid()}-012345.tmp"  # this process is still writing it
    alive.write_bytes(b"y")
    write_atomic(target, lambda p: p.write_bytes(b"graph"))
    assert not stale.exists() and alive.exists() and target.read_bytes() == b"graph"


def test_second_holder_is_refused_with_the_holders_pid(tmp_path):
    with run_lock(tmp_path / "run"):
        with pytest.raises(RunDirectoryLocked, match=f"PID {os.getpid()} on .* since 20"):
            with run_lock(tmp_path / "run"):
                pass
    with run_lock(tmp_path / "run"):  # released: the next run takes it
        pass


def test_a_killed_holder_leaves_no_stuck_lock_and_its_temporaries_go(tmp_path):
    run = tmp_path / "run"
    code = ("import sys, time; from nasnet_backbones.runlock import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirectoryLocked, match=f"PID {holder.pid}"):
            with run_lock(run):
                pass
        (run / f"last.pth.{holder.pid}-aaaaaa.tmp").write_bytes(b"partial")
    finally:
        holder.kill()
        holder.wait()
    with run_lock(run):
        assert not (run / f"last.pth.{holder.pid}-aaaaaa.tmp").exists()


def test_cli_reports_os_errors_in_one_line(tmp_path, capsys):
    folder = tmp_path / "a_directory.svg"
    folder.mkdir()
    err = expect_clean_error(capsys, "draw", "nasnet_a", "-o", folder, names=[str(folder)])
    assert "directory" in err.lower() and err.count("\n") == 1


def test_cli_reports_a_file_where_a_directory_should_be(tmp_path, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("keep me")
    err = expect_clean_error(capsys, "draw", "nasnet_a", "-o", blocker / "cells.svg", names=[str(blocker)])
    assert "not a directory" in err.lower() and blocker.read_text() == "keep me"


def test_ctrl_c_is_one_line_with_exit_130(tmp_path, capsys, monkeypatch):
    import nasnet_backbones.draw as draw

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(draw, "draw_genotype", interrupted)
    err = expect_clean_error(capsys, "draw", "nasnet_a", "-o", tmp_path / "cells.svg", code=130)
    assert err.strip() == "nasnet draw: interrupted"


def test_a_failed_torch_save_is_an_os_error_naming_the_file(tmp_path):
    """torch.save reports a short write (a full disk) as a RuntimeError; write_atomic makes it the
    OSError the CLI reports in one line, with the target's path, and keeps the old file."""
    target = tmp_path / "last.pth"
    target.write_bytes(b"old state")

    def short_write(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    with pytest.raises(OSError, match="is the disk full") as info:
        write_atomic(target, short_write)
    assert info.value.filename == str(target)
    assert target.read_bytes() == b"old state" and sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]


def test_draw_refuses_to_overwrite_its_genotype_file(tmp_path, capsys):
    from nasnet_backbones import genotypes

    cell = tmp_path / "cell.svg"  # a genotype JSON with an image's suffix
    genotypes.NASNET_A.to_json(cell)
    before = cell.read_bytes()
    expect_clean_error(capsys, "draw", str(cell), "-o", cell, names=["-o/--output", "genotype file itself"])
    assert cell.read_bytes() == before


def test_sizes_no_machine_holds_are_refused_at_the_parser(tmp_path, capsys):
    expect_clean_error(capsys, "info", "--genotype", "nasnet_a", "--cells", "1", "--filters", "100000000",
                       names=["--filters", "1..2048"])
    expect_clean_error(capsys, "detect", "make-synthetic", "--output-dir", tmp_path / "big", "--size", "100000",
                       names=["--size", "32..4096"])
    expect_clean_error(capsys, "search", "--output-dir", tmp_path / "s", "--blocks", "100000", names=["--blocks"])
    expect_clean_error(capsys, "search", "--output-dir", tmp_path / "s", "--input-size", "3", names=["--input-size"])
    assert list(tmp_path.iterdir()) == []
