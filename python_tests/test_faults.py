"""Fault injection: the trainer (the CLI on the tiny synthetic set of test_train.py, small arch, 1 thread) is
SIGKILLed at seeded random points (inside and around the checkpoint save, mid-epoch, at random times),
resumed until it finishes, and must end exactly where an uninterrupted run ends: weights, optimiser,
scheduler, memories, labels, RNG streams, epoch, and the whole log.jsonl apart from timings.

One driver process (this file run as a script) imports torch and the package once, then forks every run
from that single-threaded state: each run is a new process that knows only what is on disk, without
paying the import again. The kill points are hooks installed in the forked child before it starts; the
timed kills come from the driver."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

H, W = 32, 16
TIMING = ("time", "train_img_per_s")
# points where a hook in the child kills it, and the n-th occurrence it may be killed at
SAVE_POINTS = ("after_checkpoint", "torn_log", "inside_save", "before_rename")
POINTS = {**dict.fromkeys(SAVE_POINTS, (1, 2)), "iteration": (1, 4), "cluster": (1, 2), "eval": (1, 1)}


def train_args(root: str, out: str, recipe: str, epochs: int) -> list[str]:
    return ["train", "--recipe", recipe, "--data-root", root, "--height", str(H), "--width", str(W),
            "--arch", "small", "--epochs", str(epochs), "--iters", "2", "--ids-per-batch", "3", "--instances", "2",
            "--extract-batch", "128", "--eval-trials", "2", "--eval-every", "2", "--device", "cpu", "--threads", "1",
            "--deterministic", "--progress", "false", "--output", out]


# -- the child: hooks, then the CLI ------------------------------------------------------------------

def _die(marker: str, info: dict) -> None:
    with open(marker, "w") as f:
        json.dump(info, f)
    os.kill(os.getpid(), signal.SIGKILL)


def _install(point: str, n: int, marker: str) -> None:
    """Make this process SIGKILL itself at the n-th occurrence of ``point``."""
    from uvireid_ext import checkpoint
    from uvireid_ext.train import Trainer

    seen = [0]

    def due() -> bool:
        seen[0] += 1
        return seen[0] == n

    if point in ("after_checkpoint", "torn_log"):
        save = Trainer.save_checkpoint

        def save_then_die(self: Trainer, path: str) -> None:
            save(self, path)
            if due():  # between the checkpoint and the log append
                log = os.path.join(self.out, "log.jsonl")
                logged = _logged_epochs(log)
                if point == "torn_log":  # the append itself cut short
                    with open(log, "a") as f:
                        line = self.log_lines[-1]
                        f.write(line[: len(line) // 2])
                _die(marker, {"point": point, "epoch": self.epoch, "logged": logged})

        Trainer.save_checkpoint = save_then_die
    elif point == "inside_save":
        torch_save = torch.save

        def torn_save(obj: object, f: io.BufferedWriter) -> None:
            if not due():
                return torch_save(obj, f)
            buf = io.BytesIO()
            torch_save(obj, buf)
            f.write(buf.getvalue()[: buf.tell() // 2])
            f.flush()
            _die(marker, {"point": point})

        checkpoint.torch.save = torn_save
    elif point == "before_rename":
        replace = os.replace

        def die_before_rename(src: str, dst: str) -> None:
            if dst.endswith("checkpoint.pt") and due():
                _die(marker, {"point": point})
            replace(src, dst)

        checkpoint.os.replace = die_before_rename
    else:
        method = {"iteration": "_update_memories", "cluster": "cluster", "eval": "evaluate"}[point]
        original = getattr(Trainer, method)

        def die_at(self: Trainer, *args: object, **kwargs: object) -> object:
            if due():
                _die(marker, {"point": point, "epoch": self.epoch})
            return original(self, *args, **kwargs)

        setattr(Trainer, method, die_at)


def _fork_run(argv: list[str], point: str | None, n: int, marker: str, log: str) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the driver
        code = 1
        try:
            with open(log, "a") as f:
                os.dup2(f.fileno(), 1)
                os.dup2(f.fileno(), 2)
            if point is not None and point != "timer":
                _install(point, n, marker)
            from uvireid_ext.__main__ import main

            code = main(argv)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def _logged_epochs(path: str) -> list[int]:
    """The epochs of the complete lines of a log."""
    epochs = []
    for line in open(path).read().splitlines(keepends=True) if os.path.exists(path) else []:
        try:
            epochs.append(json.loads(line)["epoch"])
        except ValueError:
            pass
    return epochs


def _log_state(out: str) -> dict:
    """Complete log lines, whether the last one is torn, and the temporaries in the run folder."""
    path = os.path.join(out, "log.jsonl")
    text = open(path).read() if os.path.exists(path) else ""
    return {"lines": text.count("\n"), "torn": bool(text) and not text.endswith("\n"),
            "temporaries": sorted(p for p in os.listdir(out) if ".tmp." in p) if os.path.isdir(out) else []}


def drive(root: str, work: str, recipe: str, epochs: int, seed: int) -> dict:
    """The straight run, then the faulted one: every planned kill, then resumes until it finishes."""
    rng = random.Random(seed)
    points = list(POINTS)
    rng.shuffle(points)  # every hooked point once, in a seeded order, then two timed kills
    plan = [(p, rng.randint(*POINTS[p])) for p in points] + [("timer", 0), ("timer", 0)]
    marker, log = os.path.join(work, "marker.json"), os.path.join(work, "children.log")
    straight, faulted = os.path.join(work, "straight"), os.path.join(work, "faulted")
    # the straight run's pace, for the timed kills: its start (to the first log line, less an epoch) and
    # the time of an epoch
    t = time.perf_counter()
    pid, first = _fork_run(train_args(root, straight, recipe, epochs), None, 0, marker, log), None
    while (status := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if first is None and os.path.exists(os.path.join(straight, "log.jsonl")):
            first = time.perf_counter() - t
        time.sleep(0.01)
    status = status[1]
    total = time.perf_counter() - t
    epoch_s = (total - (first or 0.0)) / max(epochs - 1, 1)
    start_s = max((first or 0.0) - epoch_s, 0.0)
    report = {"plan": plan, "straight_status": status, "straight_s": total, "start_s": start_s,
              "epoch_s": epoch_s, "attempts": []}
    attempts = [*plan, *[(None, 0)] * 3]  # a few plain resumes: the run must finish in one
    for point, n in attempts:
        argv = train_args(root, faulted, recipe, epochs)
        if os.path.exists(os.path.join(faulted, "checkpoint.pt")):
            argv.append("--resume")
        if os.path.exists(marker):
            os.remove(marker)
        before = _log_state(faulted)
        t = time.perf_counter()
        pid = _fork_run(argv, point, n, marker, log)
        delay = None
        if point == "timer":  # anywhere in the epochs left, at the straight run's pace
            delay = rng.uniform(start_s, start_s + epoch_s * (epochs - before["lines"]))
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        wall = time.perf_counter() - t
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        report["attempts"].append({"point": point, "n": n, "delay": delay, "wall": wall, "resume": "--resume" in argv,
                                   "killed": killed, "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                                   "marker": json.load(open(marker)) if os.path.exists(marker) else None,
                                   "after": _log_state(faulted)})
        if point is None and not killed:
            break
    return report


# -- the test ----------------------------------------------------------------------------------------

def assert_same(a: object, b: object, where: str) -> None:
    """Exact equality of nested checkpoint state (tensors bit for bit, with their dtypes)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _records(lines: list[str]) -> list[dict]:
    """Log lines without their timing fields (a line that does not parse stays as it is)."""
    out = []
    for x in lines:
        try:
            out.append({k: v for k, v in json.loads(x).items() if k not in TIMING})
        except ValueError:
            out.append({"not json": x})
    return out


def run_faults(tmp_path, recipe: str, epochs: int, seed: int) -> None:
    from uvireid_ext.checkpoint import read_checkpoint
    from uvireid_ext.data.synthetic import make_sysu

    root = str(tmp_path / "sysu")
    make_sysu(root, ids=12, per_camera=10, size=(W, H))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, __file__, root, str(tmp_path), recipe, str(epochs), str(seed)]
    subprocess.run(args, check=True, env=env, timeout=300)
    report = json.load(open(tmp_path / "report.json"))
    children = (tmp_path / "children.log").read_text()
    why = f"seed {seed}: {json.dumps(report['attempts'])}\n{children[-3000:]}"
    assert report["straight_status"] == 0, why
    attempts = report["attempts"]
    # every hooked point was reached and killed its run
    for a in attempts:
        if a["point"] not in (None, "timer"):
            assert a["killed"] and a["marker"]["point"] == a["point"], why
    assert attempts[-1]["point"] is None and attempts[-1]["exit"] == 0, why
    # the faults did leave what they are meant to leave
    by_point = {a["point"]: a for a in attempts}
    for p in ("after_checkpoint", "torn_log"):  # the checkpoint has the epoch, the log lacks its line
        done = by_point[p]["marker"]
        assert done["epoch"] - 1 not in done["logged"], why
    assert by_point["torn_log"]["after"]["torn"], why
    for p in ("inside_save", "before_rename"):
        assert any(t.startswith("checkpoint.pt.tmp.") for t in by_point[p]["after"]["temporaries"]), why
    # the faulted run ends where the straight one does
    a, b = (read_checkpoint(str(tmp_path / run / "checkpoint.pt")) for run in ("straight", "faulted"))
    log_a, log_b = (open(tmp_path / run / "log.jsonl").read().splitlines() for run in ("straight", "faulted"))
    assert _records(log_b) == _records(log_a), why
    assert a["log"] == log_a and b["log"] == log_b  # the checkpoint keeps the lines the log holds
    assert a["epoch"] == b["epoch"] == epochs
    for st in (a, b):
        del st["log"]
        st["config"]["run"] = {k: v for k, v in st["config"]["run"].items() if k not in ("output", "resume")}
    assert_same(a, b, "checkpoint")
    assert _log_state(str(tmp_path / "faulted"))["temporaries"] == [], why
    assert "removed 1 temporary file(s) of a writer killed while saving" in children, why


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the driver forks its runs (POSIX)")


@needs_fork
@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_anywhere_then_resume_equals_a_straight_run(tmp_path, seed) -> None:
    run_faults(tmp_path, "ecul", 12, seed)


@needs_fork
@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["baseline", "mmm", "ecul"])
@pytest.mark.parametrize("seed", range(2, 6))
def test_sigkill_anywhere_more_seeds_and_recipes(tmp_path, recipe, seed) -> None:
    run_faults(tmp_path, recipe, 12, seed)


if __name__ == "__main__":  # the driver: root, work folder, recipe, epochs, seed
    # imported once, before any fork (torch.use_deterministic_algorithms imports torch._inductor: seconds)
    import torch._inductor  # noqa: F401

    import uvireid_ext.__main__  # noqa: F401
    import uvireid_ext.train  # noqa: F401

    root_, work_, recipe_, epochs_, seed_ = sys.argv[1:]
    torch.set_num_threads(1)
    result = drive(root_, work_, recipe_, int(epochs_), int(seed_))
    with open(os.path.join(work_, "report.json"), "w") as f_:
        json.dump(result, f_, indent=1)
