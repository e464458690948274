"""The `bci` command line: contract of DESIGN.md section 3."""

import subprocess
import sys

import pytest

from bci.cli import build_parser, main

COMMANDS = ["evaluate", "train", "pretrain", "replay", "record", "calibrate", "stream", "dashboard", "info", "predict", "bench"]


def test_every_subcommand_registered_with_help(capsys):
    parser = build_parser()
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([name, "--help"])
        assert exc.value.code == 0
        assert "usage: bci " + name in capsys.readouterr().out


def test_info_on_real_files(data_dir, capsys):
    assert main(["info", str(data_dir / "seizure/malow"), str(data_dir / "seizure/bonn/A_Z/Z001.txt")]) == 0
    out = capsys.readouterr().out
    assert "channels: 21" in out and "100 Hz" in out and "channels: 1" in out and "173.61 Hz" in out


def test_bad_input_one_line_error_nonzero_exit(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.edf")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no such file" in err and "Traceback" not in err


def test_console_script_runs(data_dir):
    done = subprocess.run(
        [sys.executable, "-m", "bci.cli", "info", str(data_dir / "formats/test_raw.set")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "channels: 32" in done.stdout and "128 Hz" in done.stdout


def test_output_into_a_closed_pipe_ends_quietly(data_dir):
    # `bci info FILE | head -1`: the reader leaves after one line; no BrokenPipeError traceback
    done = subprocess.run(
        f"{sys.executable} -m bci.cli info {data_dir / 'formats/test_raw.set'} {data_dir / 'formats/test_raw.set'} | head -1",
        shell=True, capture_output=True, text=True, timeout=120,
    )
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
