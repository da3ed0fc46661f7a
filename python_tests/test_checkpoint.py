"""checkpoint.py: atomic writes, the resume check, the run state's pieces (labels, memories, RNG), the log
kept in step with the checkpoint, stale temporaries."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from uvireid_ext.checkpoint import (
    atomic_save,
    check_resumed_config,
    execution,
    execution_changes,
    extend_schedule,
    labels_from_state,
    labels_state,
    memories_from_state,
    memories_state,
    read_checkpoint,
    reconcile_log,
    remove_stale_temporaries,
    restore_rng,
    rng_state,
)
from uvireid_ext.cluster import Labels
from uvireid_ext.config import STAGE_FIELDS, make_config
from uvireid_ext.memory import ClusterMemory, InstanceMemory


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("refuses to be saved")


def test_atomic_save_replaces_or_keeps_the_old_file(tmp_path) -> None:
    path = str(tmp_path / "checkpoint.pt")
    atomic_save({"epoch": 1}, path)
    assert read_checkpoint(path, keys=()) == {"epoch": 1}
    atomic_save({"epoch": 2}, path)
    assert read_checkpoint(path, keys=()) == {"epoch": 2}
    # a save that fails half-way leaves the previous checkpoint whole and no temporary file behind
    with pytest.raises(RuntimeError, match="refuses to be saved"):
        atomic_save({"epoch": 3, "bad": Unpicklable()}, path)
    assert read_checkpoint(path, keys=()) == {"epoch": 2}
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_read_checkpoint_errors_name_the_path(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train: no checkpoint at .*nope\.pt"):
        read_checkpoint(str(tmp_path / "nope.pt"))
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"eval: checkpoint .*empty\.pt is empty"):
        read_checkpoint(str(tmp_path / "empty.pt"), "eval")
    good = str(tmp_path / "good.pt")
    atomic_save({"epoch": 1, "config": {}, "model": {"w": torch.ones(1000)}}, good)
    (tmp_path / "torn.pt").write_bytes(open(good, "rb").read()[:600])
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4000))
    for name in ("torn", "noise"):
        with pytest.raises(ValueError, match=rf"train: cannot read checkpoint .*{name}\.pt: not a complete torch"):
            read_checkpoint(str(tmp_path / f"{name}.pt"))
    with pytest.raises(ValueError, match=r"good\.pt is not a uvireid_ext training checkpoint: it lacks \['optimizer'"):
        read_checkpoint(good)
    # weights_only: a file that would run code when unpickled is refused, not executed
    atomic_save({"epoch": 1, "config": {}, "model": {}, "x": Harmless()}, str(tmp_path / "c.pt"))
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*c\.pt"):
        read_checkpoint(str(tmp_path / "c.pt"), keys=())
    # numpy's RNG state (in every training checkpoint) loads under weights_only
    atomic_save({"rng": rng_state(False)}, str(tmp_path / "rng.pt"))
    restore_rng(read_checkpoint(str(tmp_path / "rng.pt"), keys=("rng",))["rng"], False)


class Harmless:
    pass


def test_extend_schedule_keeps_the_stages_of_the_first_run() -> None:
    saved = make_config("ecul", 4)
    saved_dict = dataclasses.asdict(saved)
    longer = make_config("ecul", 10)
    assert longer.recipe.joint_start != saved.recipe.joint_start  # "50%" of another total
    cfg, kept = extend_schedule(longer, saved_dict, 4, "ck.pt")
    assert cfg.optim.epochs == 10 and cfg.recipe.joint_start == saved.recipe.joint_start
    assert any(k.startswith("recipe.joint_start=") for k in kept)
    check_resumed_config(cfg, saved_dict, "ck.pt")  # the rest is unchanged, so it resumes
    assert extend_schedule(saved, saved_dict, 2, "ck.pt") == (saved, [])
    with pytest.raises(ValueError, match=r"epochs=3, but the checkpoint ck\.pt has already trained 4 epochs"):
        extend_schedule(make_config("ecul", 3), saved_dict, 4, "ck.pt")


def test_stage_fields_are_the_stage_typed_fields() -> None:
    from uvireid_ext.config import _fields, _kind

    assert set(STAGE_FIELDS) == {f.name for f, t in _fields("recipe") if _kind(t)[0] == "stage"}


def test_resume_refuses_changed_fields_and_allows_resumable_ones() -> None:
    saved = make_config("ecul", 4)
    saved_dict = {k: vars(v).copy() for k, v in vars(saved).items()}
    now = make_config("ecul", 4)
    # what may change on resume: where the data and output live, threads, device, progress, tensorboard
    now.data.data_root, now.run.threads, now.run.device, now.run.progress = "/elsewhere", 3, "cpu", False
    check_resumed_config(now, saved_dict, "ck.pt")
    now.optim.lr = saved.optim.lr * 2
    now.recipe.temp = 0.07
    with pytest.raises(ValueError, match=r"differs from the checkpoint.s \(ck\.pt\): .*optim\.lr: .* -> "
                       r".*recipe\.temp: "
                       r"0\.05 -> 0\.07"):
        check_resumed_config(now, saved_dict, "ck.pt")


def test_labels_memories_and_rng_round_trip(tmp_path) -> None:
    labels = Labels(torch.tensor([0, 1, -1, 1]), torch.tensor([0, 0, -1, 1]), True)
    back = labels_from_state(labels_state(labels), torch.device("cpu"))
    assert torch.equal(back.intra, labels.intra) and torch.equal(back.joint, labels.joint) and back.shared
    no_joint = labels_from_state(labels_state(Labels(labels.intra, None, False)), torch.device("cpu"))
    assert no_joint.joint is None and not no_joint.shared
    assert labels_state(None) is None and labels_from_state(None, torch.device("cpu")) is None

    feats = torch.nn.functional.normalize(torch.randn(4, 6), dim=1)
    mems = torch.nn.ModuleDict({"visible": ClusterMemory.from_features(feats, labels.intra, 2, 0.05),
                                "visible_instance": InstanceMemory(feats, labels.intra, 0.05)})
    path = str(tmp_path / "m.pt")
    atomic_save(memories_state(mems), path)
    restored = memories_from_state(read_checkpoint(path, keys=("memories",)), 0.05, torch.device("cpu"))
    assert {k: type(v) for k, v in restored.items()} == {k: type(v) for k, v in mems.items()}
    for k in mems:
        for (name, a), (_, b) in zip(mems[k].state_dict().items(), restored[k].state_dict().items(), strict=True):
            assert torch.equal(a, b), (k, name)

    state = rng_state(False)
    draws = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(state, False)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]


def _line(epoch: int, loss: float = 1.0) -> str:
    return json.dumps({"epoch": epoch, "loss": {"nce": loss}})


def test_reconcile_log_makes_the_log_hold_the_checkpoint_lines(tmp_path) -> None:
    path = str(tmp_path / "log.jsonl")
    kept = [_line(0), _line(1), _line(2)]
    # absent file: every line comes back
    assert reconcile_log(path, kept, 3)[1] is not None
    assert open(path).read() == "".join(x + "\n" for x in kept)
    # the same content: nothing is written
    os.utime(path, (0, 0))
    assert reconcile_log(path, kept, 3) == (kept, None)
    assert os.stat(path).st_mtime == 0
    # a kill between the checkpoint and the append: the last line is missing
    open(path, "w").write(kept[0] + "\n" + kept[1] + "\n")
    lines, change = reconcile_log(path, kept, 3)
    assert lines == kept and "dropped 0 line(s)" in change and "restored 1 line(s)" in change
    assert open(path).read().splitlines() == kept
    # lines of epochs the checkpoint does not have, and a torn last line, go
    open(path, "w").write("".join(x + "\n" for x in [*kept, _line(3), _line(4)]) + '{"epoch": 5, "lo')
    lines, change = reconcile_log(path, kept, 3)
    assert "dropped 3 line(s)" in change and "restored 0 line(s)" in change
    assert open(path).read().splitlines() == kept
    # a line of an epoch the checkpoint has, but with other content (an earlier run's), is replaced
    open(path, "w").write("".join(x + "\n" for x in [kept[0], _line(1, 2.0), kept[2]]))
    assert "dropped 1 line(s)" in reconcile_log(path, kept, 3)[1]
    assert open(path).read().splitlines() == kept
    assert os.listdir(tmp_path) == ["log.jsonl"]  # the atomic rewrite left no temporary


def test_reconcile_log_of_a_checkpoint_without_log_lines(tmp_path) -> None:
    # a checkpoint written before checkpoints kept the log: the lines of its epochs stay, later ones go,
    # and what cannot be restored is named
    path = str(tmp_path / "log.jsonl")
    open(path, "w").write("".join(x + "\n" for x in [_line(0), _line(1), _line(2)]))
    assert reconcile_log(path, None, 3) == ([_line(0), _line(1), _line(2)], None)
    lines, change = reconcile_log(path, None, 2)
    assert lines == [_line(0), _line(1)] and "dropped 1 line(s)" in change
    assert open(path).read().splitlines() == lines
    open(path, "w").write(_line(0) + "\n")
    lines, change = reconcile_log(path, None, 2)
    assert lines == [_line(0)] and "lines of epochs [1] cannot be restored" in change


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_remove_stale_temporaries_of_dead_writers_only(tmp_path) -> None:
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # our own pid: this process has written nothing yet, so the file is a dead writer's (a reused pid)
        names = {"dead": f"checkpoint.pt.tmp.{dead}", "ours": f"checkpoint.pt.tmp.{os.getpid()}",
                 "zero": "checkpoint.pt.tmp.0", "log": f"log.jsonl.tmp.{dead}",
                 "live": f"checkpoint.pt.tmp.{live.pid}", "other_file": f"other.pt.tmp.{dead}",
                 "not_a_pid": "checkpoint.pt.tmp.x1", "suffix": f"checkpoint.pt.tmp.{dead}.bak"}
        for name in names.values():
            (tmp_path / name).write_bytes(b"partial")
        (tmp_path / "checkpoint.pt").write_bytes(b"whole")
        removed, kept = remove_stale_temporaries(str(tmp_path), ("checkpoint.pt", "log.jsonl"))
        assert sorted(removed) == sorted(str(tmp_path / names[k]) for k in ("dead", "ours", "zero", "log"))
        assert kept == [str(tmp_path / names["live"])]
        assert sorted(os.listdir(tmp_path)) == sorted(["checkpoint.pt", *(names[k] for k in (
            "live", "other_file", "not_a_pid", "suffix"))])
    finally:
        live.kill()
        live.wait()
    assert remove_stale_temporaries(str(tmp_path / "absent"), ("checkpoint.pt",)) == ([], [])


def test_execution_changes_name_threads_device_and_world_size() -> None:
    cpu = torch.device("cpu")
    assert execution(3, cpu) == {"threads": 3, "device": "cpu", "world_size": 1}
    assert execution_changes(execution(1, cpu), execution(1, cpu)) == []
    assert execution_changes(execution(1, cpu), execution(2, cpu)) == ["threads 1 -> 2"]
    assert execution_changes(execution(1, cpu, 2), execution(1, cpu, 4)) == ["world_size 2 -> 4"]
    gpu = {"threads": 1, "device": "NVIDIA H200"}  # a checkpoint from before world_size was recorded
    assert execution_changes(gpu, execution(1, cpu, 2)) == ["device 'NVIDIA H200' -> 'cpu'"]
    # nothing recorded (a checkpoint of an older version, or no thread count configured): nothing to compare
    assert execution_changes(None, execution(2, cpu)) == execution_changes({"threads": None}, execution(2, cpu)) == []
