"""The training loop on a tiny synthetic SYSU-shaped set (16x32 images, the small backbone, 1 thread)."""

import json
import logging
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from uvireid_ext.__main__ import main as cli
from uvireid_ext.config import Config, add_arguments, config_from_args, make_config
from uvireid_ext.data.sets import load_eval_set, load_train_set
from uvireid_ext.data.synthetic import make_sysu
from uvireid_ext.features import extract_features
from uvireid_ext.modality import Modality
from uvireid_ext.train import Trainer

H, W = 32, 16


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("sysu"))
    make_sysu(path, ids=12, per_camera=10, size=(W, H))
    return path


@pytest.fixture(scope="module")
def data(root):
    return load_train_set("sysu", root, H, W), load_eval_set("sysu", root, H, W, trials=2)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)


def small_config(recipe: str, out: str, root: str = "", epochs: int = 1, **recipe_over) -> Config:
    return make_config(recipe, epochs, {
        "data": {"data_root": root, "height": H, "width": W, "eval_trials": 2},
        "model": {"arch": "small"},
        "optim": {"iters": 2, "ids_per_batch": 3, "instances": 2, "extract_batch": 128},
        "recipe": recipe_over,
        "run": {"output": out, "device": "cpu", "threads": 1, "deterministic": True, "progress": False},
    })


@pytest.mark.parametrize("recipe", ["baseline", "mmm", "ecul"])
def test_one_epoch_of_each_recipe(recipe, data, tmp_path) -> None:
    trainer = Trainer(small_config(recipe, str(tmp_path)), *data)
    (rec,) = trainer.fit()
    assert set(rec["time"]) == {"extract", "cluster", "memories", "train", "eval"}
    assert rec["images"] == 2 * (3 * 2 * 2 + 3 * 2)  # iters × (two visible views + infrared)
    assert rec["ari"]["visible"].keys() == {"outliers_one_cluster", "outliers_singletons", "outliers_excluded"}
    assert all(np.isfinite(v) for v in rec["loss"].values())
    expected = {"baseline": {"nce_joint"}, "mmm": {"sca_intra", "sca_inter", "triplet"},
                "ecul": {"ins_visible", "ins_infrared", "nce_joint"}}[recipe]
    # the joint loss appears when a sampled image is in a joint cluster, which two tiny batches may miss
    assert expected - {"nce_joint"} <= set(rec["loss"])
    assert "nce_joint" not in rec["loss"] or rec.get("clusters_joint", 0) > 0
    assert 0 <= rec["eval"]["R1"] <= 1 and 1 <= len(rec["eval"]["cmc"]) <= 20
    log = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert len(log) == 1 and log[0]["epoch"] == 0
    saved = json.load(open(tmp_path / "config.json"))
    assert saved["recipe"]["recipe"] == recipe and saved["model"]["arch"] == "small"
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ck["epoch"] == 1 and "visible" in ck["memories"]


class Interrupt(Exception):
    pass


def _stop_after_first(rec: dict) -> None:
    raise Interrupt


def test_resume_is_exact(data, tmp_path) -> None:
    full = Trainer(small_config("ecul", str(tmp_path / "a"), epochs=2), *data)
    full.fit()
    cfg = small_config("ecul", str(tmp_path / "b"), epochs=2)
    with pytest.raises(Interrupt):
        Trainer(cfg, *data, on_epoch=_stop_after_first).fit()
    assert not any(p.name.startswith("checkpoint.pt.tmp") for p in (tmp_path / "b").iterdir())
    cfg.run.resume = True
    resumed = Trainer(cfg, *data)
    assert resumed.epoch == 1
    resumed.fit()
    a, b = full.state(), resumed.state()
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for name, mem in a["memories"].items():
        for k, v in mem.items():
            assert torch.equal(v, b["memories"][name][k]), (name, k)
    for i, s in a["optimizer"]["state"].items():
        assert torch.equal(s["exp_avg"], b["optimizer"]["state"][i]["exp_avg"])
    assert a["scheduler"] == b["scheduler"] and a["epoch"] == b["epoch"] == 2
    la = [json.loads(x) for x in open(tmp_path / "a" / "log.jsonl")]
    lb = [json.loads(x) for x in open(tmp_path / "b" / "log.jsonl")]
    assert la[1]["loss"] == lb[1]["loss"] and la[1]["ari"] == lb[1]["ari"]


TIMING = ("time", "train_img_per_s")


def log_records(path) -> list[dict]:
    """The lines of a log.jsonl without their timing fields."""
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in open(path)]


def test_resume_restores_the_log_line_a_kill_lost(data, tmp_path, monkeypatch) -> None:
    # a stop after the checkpoint of epoch 0 but before its log line (a kill between the two writes)
    Trainer(small_config("baseline", str(tmp_path / "a"), epochs=2), *data).fit()
    cfg = small_config("baseline", str(tmp_path / "b"), epochs=2)
    with monkeypatch.context() as m:
        m.setattr(Trainer, "_write_log", lambda self: _stop_after_first({}))
        with pytest.raises(Interrupt):
            Trainer(cfg, *data).fit()
    assert not (tmp_path / "b" / "log.jsonl").exists()
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["epoch"] == 1
    cfg.run.resume = True
    resumed = Trainer(cfg, *data)
    assert log_records(tmp_path / "b" / "log.jsonl") == log_records(tmp_path / "a" / "log.jsonl")[:1]
    resumed.fit()
    assert log_records(tmp_path / "b" / "log.jsonl") == log_records(tmp_path / "a" / "log.jsonl")


def test_a_new_run_replaces_an_earlier_log_at_its_first_epoch(data, tmp_path, caplog) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "log.jsonl").write_text('{"epoch": 0, "recipe": "mmm"}\n{"epoch": 1, "recipe": "mmm"}\n')
    with caplog.at_level(logging.WARNING, logger="uvireid_ext.train"):
        Trainer(small_config("baseline", str(out), epochs=2), *data).fit()
    assert [json.loads(x)["recipe"] for x in open(out / "log.jsonl")] == ["baseline", "baseline"]
    assert caplog.text.count("reconciled with the checkpoint") == 1 and "dropped 2 line(s)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="uvireid_ext.train"):  # a fresh folder: nothing to say
        Trainer(small_config("baseline", str(tmp_path / "fresh")), *data).fit()
    assert "reconciled" not in caplog.text


def test_start_removes_temporaries_of_killed_writers(data, tmp_path, caplog) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a writer that is gone
    tmp_path.joinpath(f"checkpoint.pt.tmp.{proc.pid}").write_bytes(b"torn")
    with caplog.at_level(logging.WARNING, logger="uvireid_ext.train"):
        Trainer(small_config("baseline", str(tmp_path)), *data)
    assert not tmp_path.joinpath(f"checkpoint.pt.tmp.{proc.pid}").exists()
    assert f"removed 1 temporary file(s) of a writer killed while saving: {tmp_path}" in caplog.text


def test_resume_on_another_thread_count_warns_it_is_not_bit_exact(data, tmp_path) -> None:
    # 1 against 2 threads: 93 of 113 weight tensors differ after 2 ecul epochs of this config, so
    # the resume goes on but says so; the same count resumes silently
    cfg = small_config("baseline", str(tmp_path), epochs=2)
    with pytest.raises(Interrupt):
        Trainer(cfg, *data, on_epoch=_stop_after_first).fit()
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["execution"] == {
        "threads": 1, "device": "cpu", "world_size": 1}
    cfg.run.resume = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Trainer(cfg, *data).epoch == 1
    cfg.run.threads = 2
    with pytest.warns(UserWarning, match=r"train: resuming .*checkpoint\.pt with threads 1 -> 2 \(checkpoint -> now\)"
                      r".*no longer bit-exact") as caught:
        assert Trainer(cfg, *data).epoch == 1
    assert "other batches" not in str(caught[0].message)


def test_resume_on_another_world_size_warns_of_other_batches(data, tmp_path) -> None:
    cfg = small_config("baseline", str(tmp_path), epochs=2)
    with pytest.raises(Interrupt):
        Trainer(cfg, *data, on_epoch=_stop_after_first).fit()
    st = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    st["execution"]["world_size"] = 2  # as two processes would have written it
    torch.save(st, tmp_path / "checkpoint.pt")
    cfg.run.resume = True
    with pytest.warns(UserWarning, match=r"with world_size 2 -> 1 \(checkpoint -> now\).*each rank draws its own "
                      r"batches \(another world size: other batches, another global batch size\).*no longer "
                      r"bit-exact"):
        assert Trainer(cfg, *data).epoch == 1


def test_resume_with_more_epochs_continues_the_schedule(data, tmp_path) -> None:
    # the extended run keeps the stage epochs of its first 1-epoch run, so it equals a straight 2-epoch
    # run with those stages
    first = small_config("ecul", str(tmp_path / "b"), epochs=1)
    stages = {k: getattr(first.recipe, k) for k in ("joint_start", "cma_start", "tsmem_switch")}
    full = Trainer(small_config("ecul", str(tmp_path / "a"), epochs=2, **stages), *data)
    full.fit()
    Trainer(first, *data).fit()
    longer = small_config("ecul", str(tmp_path / "b"), epochs=2)
    assert longer.recipe.joint_start != first.recipe.joint_start  # "50%" of 2 epochs is another epoch
    longer.run.resume = True
    resumed = Trainer(longer, *data)
    assert resumed.epoch == 1 and resumed.cfg.recipe.joint_start == first.recipe.joint_start
    resumed.fit()
    a, b = full.state(), resumed.state()
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["scheduler"] == b["scheduler"] and b["epoch"] == 2
    shorter = small_config("ecul", str(tmp_path / "b"), epochs=1)
    shorter.run.resume = True
    with pytest.raises(ValueError, match="epochs=1, but the checkpoint .* has already trained 2 epochs"):
        Trainer(shorter, *data)


def test_cheap_errors_come_before_the_data_loads(tmp_path) -> None:
    # the data root does not exist: each error below must be raised before the loader would say so
    absent = str(tmp_path / "no_data")
    cfg = small_config("baseline", str(tmp_path / "o"), absent)
    cfg.run.device = "cuda:0" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match="train: device 'cuda:.*' requested but"):
        Trainer(cfg)
    cfg = small_config("baseline", str(tmp_path / "o"), absent)
    cfg.model.weights = str(tmp_path / "absent.pth")
    with pytest.raises(FileNotFoundError, match="weight file not found"):
        Trainer(cfg)
    cfg = small_config("baseline", str(tmp_path / "o"), absent)
    cfg.run.resume = True
    with pytest.raises(FileNotFoundError, match="--resume but no checkpoint at"):
        Trainer(cfg)
    cfg = small_config("baseline", str(tmp_path / "o"), absent)
    cfg.model.arch = "resnet50"
    with pytest.warns(UserWarning, match="ResNet-50 without --weights starts from random initialisation"):
        with pytest.raises(FileNotFoundError, match="data root not found"):
            Trainer(cfg)


def test_cli_eval_of_bad_checkpoints_names_the_file(tmp_path, capsys) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(1).bytes(5000))
    torch.save({"weights": torch.ones(3)}, tmp_path / "foreign.pt")
    for name, why in (("empty", "is empty"), ("noise", "cannot read checkpoint"),
                      ("foreign", "is not a uvireid_ext training checkpoint"), ("absent", "no checkpoint at")):
        assert cli(["eval", "--checkpoint", str(tmp_path / f"{name}.pt"), "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: eval: ") and why in err and f"{name}.pt" in err, err


@pytest.mark.parametrize(("section", "field", "value", "message"), [
    ("optim", "instances", 0, "optim.instances must be >= 1, got 0"),
    ("optim", "lr", 0.0, "optim.lr must be > 0, got 0.0"),
    ("recipe", "joint_start", -1, "recipe.joint_start must be >= 0"),
])
def test_bad_numbers_in_the_config_are_named(data, tmp_path, section, field, value, message) -> None:
    cfg = small_config("baseline", str(tmp_path))
    setattr(getattr(cfg, section), field, value)
    with pytest.raises(ValueError, match=message):
        Trainer(cfg, *data)


def test_resume_with_a_changed_config_names_the_change(data, tmp_path) -> None:
    cfg = small_config("baseline", str(tmp_path), epochs=2)
    with pytest.raises(Interrupt):
        Trainer(cfg, *data, on_epoch=_stop_after_first).fit()
    cfg.run.resume = True
    cfg.optim.lr = cfg.optim.lr * 10
    with pytest.raises(ValueError, match=r"differs from the checkpoint's .*optim\.lr"):
        Trainer(cfg, *data)


def _ddp_worker(rank: int, world: int, init: str, root: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        train_set = load_train_set("sysu", root, H, W)
        trainer = Trainer(small_config("ecul", out, root), train_set, None)
        feats = extract_features(trainer.model, trainer.images, train_set.modality == Modality.INFRARED,
                                 device=trainer.device)
        trainer.fit()
        torch.save({"feats": feats, "model": trainer.model.state_dict(),
                    "memories": {k: v.state_dict() for k, v in trainer.memories.items()}},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_ddp_two_gloo_processes(root, data, tmp_path) -> None:
    out = str(tmp_path / "ddp")
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_ddp_worker, args=(2, init, root, out), nprocs=2, join=True)
    r0, r1 = (torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=False) for r in (0, 1))
    # Each rank extracted half; the all-gathered features equal a single-process extraction.
    single = Trainer(small_config("ecul", str(tmp_path / "single")), *data)
    ref = extract_features(single.model, single.images, data[0].modality == Modality.INFRARED,
                           device=torch.device("cpu"))
    torch.testing.assert_close(r0["feats"], ref, rtol=1e-4, atol=1e-5)
    assert torch.equal(r0["feats"], r1["feats"])
    # Gradients were averaged and memories updated with every rank's batch: ranks stay identical.
    for k, v in r0["model"].items():
        assert torch.equal(v, r1["model"][k]), k
    assert not torch.equal(r0["model"]["layer1.0.conv1.weight"], single.model.state_dict()["layer1.0.conv1.weight"])
    for name, mem in r0["memories"].items():
        for k, v in mem.items():
            assert torch.equal(v, r1["memories"][name][k]), (name, k)
    rec = json.loads(open(os.path.join(out, "log.jsonl")).readline())
    assert rec["images"] == 2 * 2 * (3 * 2 * 2 + 3 * 2)  # two ranks' batches


def test_no_cluster_epoch_is_logged_and_training_goes_on(data, tmp_path) -> None:
    trainer = Trainer(small_config("baseline", str(tmp_path), epochs=2, min_samples=100_000), *data)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    history = trainer.fit()
    assert [h["event"] for h in history] == ["no_cluster", "no_cluster"]
    assert "no cluster in the visible and infrared set" in history[0]["message"]
    assert history[1]["eval"]["R1"] >= 0  # the epoch still evaluates
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 2
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_data_errors(root, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="data root not found: .*missing_root"):
        load_train_set("sysu", str(tmp_path / "missing_root"), H, W)
    bad = str(tmp_path / "bad")
    shutil.copytree(root, bad)
    pid = open(os.path.join(bad, "exp", "train_id.txt")).read().split(",")[0]
    victim = os.path.join(bad, "cam4", f"{int(pid):04d}", "0003.jpg")
    with open(victim, "wb") as f:
        f.write(b"\xff\xd8 truncated")
    with pytest.raises(OSError, match=f"cannot read image {victim}"):
        load_train_set("sysu", bad, H, W)
    os.remove(victim)
    shutil.rmtree(os.path.join(bad, "cam6"))
    with pytest.raises(FileNotFoundError, match="cam6 not found"):
        load_train_set("sysu", bad, H, W)


def test_weight_and_recipe_errors(data, tmp_path) -> None:
    cfg = small_config("baseline", str(tmp_path))
    cfg.model.weights = str(tmp_path / "absent.pth")
    with pytest.raises(FileNotFoundError, match="weight file not found: .*absent.pth"):
        Trainer(cfg, *data)
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "r50.pth")
    cfg.model.weights = str(tmp_path / "r50.pth")
    with pytest.raises(ValueError, match="does not match arch 'small'"):
        Trainer(cfg, *data)
    with pytest.raises(ValueError, match="unknown recipe 'ecul2'"):
        make_config("ecul2", 1)
    cfg = small_config("baseline", str(tmp_path))
    cfg.recipe.sca_distance = "l3"
    with pytest.raises(ValueError, match=r"unknown sca_distance 'l3' \(recipe.sca_distance\); expected one of l1"):
        Trainer(cfg, *data)


def test_cli_errors_and_config_precedence(root, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli(["train", "--recipe", "nope", "--data-root", root])
    assert exit_.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    assert cli(["train", "--recipe", "mmm", "--data-root", str(tmp_path / "gone"), "--device", "cpu", "--arch", "small",
                "--output", str(tmp_path / "o")]) == 2
    assert "data root not found" in capsys.readouterr().err
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"optim": {"iters": 7, "lr": 0.01}, "recipe": {"recipe": "mmm"}}))
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(["--config", str(cfg_file), "--lr", "0.5", "--objectives", "cluster_nce",
                                         "triplet", "--tsmem-switch", "none", "--epochs", "10"]))
    assert cfg.recipe.recipe == "mmm" and cfg.recipe.mmlm  # preset of the file's recipe
    assert cfg.optim.iters == 7 and cfg.optim.lr == 0.5 and cfg.optim.epochs == 10  # flags beat the file
    assert cfg.recipe.objectives == ["cluster_nce", "triplet"] and cfg.recipe.tsmem_switch is None
    cfg_file.write_text(json.dumps({"optim": {"itres": 7}}))
    with pytest.raises(ValueError, match="unknown field optim.itres"):
        config_from_args(p.parse_args(["--config", str(cfg_file)]))


def test_cli_train_then_eval(root, tmp_path, capsys) -> None:
    out = str(tmp_path / "run")
    args = ["train", "--recipe", "baseline", "--data-root", root, "--height", str(H), "--width", str(W),
            "--arch", "small", "--epochs", "1", "--iters", "1", "--ids-per-batch", "3", "--instances", "2",
            "--eval-trials", "1", "--device", "cpu", "--threads", "1", "--output", out]
    assert cli(args) == 0
    assert cli(["eval", "--checkpoint", os.path.join(out, "checkpoint.pt"), "--trials", "2", "--device", "cpu",
                "--json", str(tmp_path / "m.json")]) == 0
    assert "R1" in capsys.readouterr().out
    assert json.load(open(tmp_path / "m.json"))["mAP"] > 0
    assert sys.modules.get("uvireid_ext.train") is not None


def test_regdb_one_epoch(tmp_path, capsys) -> None:
    from uvireid_ext.data.synthetic import make_regdb

    root = str(tmp_path / "regdb")
    make_regdb(root, ids=12, size=(W, H))
    cfg = small_config("ecul", str(tmp_path / "run"), root)
    cfg.data.dataset = "regdb"
    d = cfg.data
    trainer = Trainer(cfg, None, load_eval_set("regdb", root, H, W, trial=d.trial))
    assert len(trainer.train_set) == 2 * 6 * 10 and bool((trainer.train_set.camera == 0).all())
    (rec,) = trainer.fit()
    assert rec["eval"]["R1"] >= 0 and "infrared" in rec["ari"]
    ck = os.path.join(tmp_path, "run", "checkpoint.pt")
    assert cli(["eval", "--checkpoint", ck, "--device", "cpu", "--direction", "t2v"]) == 0
    assert "regdb trial 1 t2v" in capsys.readouterr().out
    with pytest.warns(UserWarning, match=r"--trial 2 differs from the trial this checkpoint was trained on \(1\)"):
        assert cli(["eval", "--checkpoint", ck, "--device", "cpu", "--trial", "2"]) == 0
    assert cli(["eval", "--checkpoint", ck, "--device", "cpu", "--mode", "indoor"]) == 2
    assert "--mode indoor is a SYSU-MM01 setting" in capsys.readouterr().err
