"""``python -m uvireid_ext bench NAME``: every benchmark explains its options (defaults included, the
whole docstring), refuses a wrong argument, writes to --out (default the git-ignored runs/bench, never
the committed bench/results) and prints the absolute paths it wrote, with readable lines, no dicts."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from uvireid_ext.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
NAMES = sorted(p.stem[len("bench_"):] for p in (ROOT / "bench").glob("bench_*.py"))


@pytest.fixture(autouse=True)
def keep_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # cmd_bench sets sys.argv for the script
    monkeypatch.setattr(sys, "path", list(sys.path))  # and puts the source root on sys.path


def script(name: str) -> ModuleType:
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # as the scripts expect (restored by keep_argv)
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", ROOT / "bench" / f"bench_{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(args: list[str]) -> int:
    try:
        return main(["bench", *args])
    except SystemExit as e:  # argparse's --help and errors, and the scripts' sys.exit
        return int(e.code or 0)


def test_every_benchmark_is_listed() -> None:
    assert NAMES == ["cluster", "distance", "eval", "memory", "mmd", "rerank", "train"]


@pytest.mark.parametrize("name", NAMES)
def test_help_shows_every_default_and_the_whole_docstring(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = script(name)
    parser: argparse.ArgumentParser = module.parser()
    assert parser.description == module.__doc__  # not its first line, cut mid-sentence
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            text = formatter._get_help_string(action)
            assert "default" in text, f"bench {name}: {action.option_strings[0]} shows no default: {text!r}"
    out = parser._actions[1]
    assert out.dest == "out" and out.default == str(ROOT / "runs" / "bench")

    assert run_cli([name, "--help"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage:") and "--out OUT" in printed
    assert module.__doc__.strip().splitlines()[-1].strip() in printed


@pytest.mark.parametrize("name", NAMES)
def test_wrong_argument_is_refused(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli([name, "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_unknown_benchmark_lists_the_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["nosuch"]) == 2
    assert "available: " + ", ".join(NAMES) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "args", "stem"),
    [
        ("memory", ["--sizes", "8,10,4", "--min-run-time", "0.01"], "memory_update_cpu"),
        ("mmd", ["--ids", "2,3", "--per-id", "2", "--dim", "4", "--min-run-time", "0.01"], "mmd2_cpu"),
    ],
)
def test_writes_to_out_relative_to_the_caller_and_prints_where(
    name: str, args: list[str], stem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    committed = {p: p.stat().st_mtime_ns for p in (ROOT / "bench" / "results").glob("*")}
    monkeypatch.chdir(tmp_path)
    assert run_cli([name, *args, "--out", "results_here"]) == 0
    printed = capsys.readouterr().out
    json_path, md_path = tmp_path / "results_here" / f"{stem}.json", tmp_path / "results_here" / f"{stem}.md"
    assert json_path.is_file() and md_path.is_file()
    assert f"wrote {json_path} and {md_path}" in printed  # absolute, though --out was relative
    assert "{" not in printed and "}" not in printed  # rows as readable lines and a table, no dict dumps
    assert "| B |" in printed or "| ids |" in printed
    assert {p: p.stat().st_mtime_ns for p in (ROOT / "bench" / "results").glob("*")} == committed


def test_distance_pipeline_keeps_medians_of_alternate_runs(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["distance", "--sizes", "300", "--dim", "32", "--repeats", "1", "--runs", "3",
                    "--out", str(tmp_path)]) == 0
    row = json.loads((tmp_path / "distance_cpu.json").read_text())["rows"][0]
    assert row["runs"] == 3
    ours = row["knn_s"] + row["after_knn_s"]
    port = row["classic_knn_s"] + row["classic_after_knn_s"]
    assert row["speedup_total"] == pytest.approx(port / ours, rel=0.05)
    low, high = (float(v) for v in row["speedup_total_range"].split("-"))
    assert 0 < low <= high  # the median pair's ratio need not lie inside: medians of stages, not of ratios
    capsys.readouterr()
    assert run_cli(["distance", "--sizes", "300", "--runs", "0", "--out", str(tmp_path)]) == 2
    assert "--runs must be >= 1, got 0" in capsys.readouterr().err


def test_distance_times_knn_against_a_plain_gemm_and_faiss_when_installed(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["distance", "--sizes", "300", "--dim", "32", "--no-baseline", "--repeats", "1",
                    "--out", str(tmp_path)]) == 0
    printed = capfd.readouterr().out  # the timings run in child processes: capture the file descriptor
    row = json.loads((tmp_path / "distance_cpu.json").read_text())["rows"][0]
    assert row["knn_best_s"] > 0 and row["gemm_s"] > 0
    assert row["knn_vs_gemm"] == pytest.approx(row["gemm_s"] / row["knn_best_s"], rel=0.01, abs=0.01)
    if importlib.util.find_spec("faiss") is None:
        assert "faiss is not installed" in printed and "faiss_s" not in row
    else:
        assert row["faiss_s"] > 0 and 0.0 <= row["faiss_rows_off"] <= 1.0
