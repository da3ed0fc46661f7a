"""The learning benchmark (``python -m uvireid_ext demo``): errors before any work, and a tiny run end to
end with its table, JSON and plots."""

import json
import math
import os
import re

import pytest
import torch
from PIL import Image

from uvireid_ext.__main__ import main
from uvireid_ext.checkpoint import load_model
from uvireid_ext.data.synthetic import make_sysu
from uvireid_ext.demo import aggregate, format_table, parse_seeds

TINY = ["--ids", "20", "--test-ids", "6", "--per-camera", "3", "--width", "16", "--height", "32", "--epochs", "1",
        "--iters", "2", "--trials", "1", "--threads", "1"]


def test_seeds():
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("4,9") == [4, 9]
    for bad in ("", "0", "a", "1,1", "-1,2"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)


@pytest.mark.parametrize("extra, message", [
    (["--seeds", ""], "--seeds"),
    (["--seeds", "0"], "gives no seed"),
    (["--recipes", "nope"], "unknown row 'nope'"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--test-ids", "19"], "--test-ids must leave"),
    (["--per-camera", "1"], "--per-camera must be >= 2"),
    (["--lr", "0"], "--lr and --eps must be > 0"),
    (["--init", "pretrained", "--pretrain-iters", "0"], "--pretrain-iters must be >= 1"),
])
def test_bad_arguments_stop_before_any_work(tmp_path, capsys, extra, message):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *TINY, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_data_root_must_be_a_generated_set(tmp_path, capsys):
    (tmp_path / "notaset").mkdir()
    assert main(["demo", "--out", str(tmp_path / "d"), "--data", str(tmp_path / "notaset"), *TINY]) == 2
    assert "is not a set written by make_sysu" in capsys.readouterr().err
    (tmp_path / "d" / "data").mkdir(parents=True)
    (tmp_path / "d" / "data" / "x.txt").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "d"), *TINY]) == 2
    assert "no generator record" in capsys.readouterr().err


def test_tiny_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--recipes", "oracle,baseline", "--seeds", "2", *TINY]) == 0
    printed = capsys.readouterr().out
    for row in ("untrained", "oracle", "baseline"):
        assert row in printed
    res = json.loads((out / "demo.json").read_text())
    assert [(r["variant"], r["seed"]) for r in res["runs"]] == [
        (v, s) for s in (0, 1) for v in ("untrained", "oracle", "baseline")]
    assert res["data"]["params"]["test_ids"] == 6
    rows = {r["variant"]: r for r in res["rows"]}
    assert set(rows) == {"untrained", "oracle", "baseline"} and rows["oracle"]["seeds"] == [0, 1]
    base = [r for r in res["runs"] if r["variant"] == "baseline"]
    assert all(len(r["map_curve"]) == 1 and len(r["ari_curve"]) == 2 for r in base)
    for r in res["runs"]:  # every row measures how far its final training features mix the modalities
        assert 0 <= r["mixing"]["cross_share"] <= 1 and 0 <= r["mixing"]["cross_nn_precision"] <= 1
    assert "cross@40" in printed and math.isfinite(rows["baseline"]["cross_share"][0])
    for name in ("cmc.png", "curves.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 400 and im.size[1] > 300
    assert "| untrained |" in (out / "demo.md").read_text()
    # a second run reuses the generated set (same parameters)
    stamp = os.path.getmtime(out / "data" / "synthetic.json")
    assert main(["demo", "--out", str(out), "--recipes", "baseline", "--seeds", "1", *TINY]) == 0
    assert os.path.getmtime(out / "data" / "synthetic.json") == stamp


def test_aggregate_gap_and_spread():
    def run(v, s, m):
        return {"variant": v, "seed": s, "eval": {"R1": m, "R5": m, "mAP": m, "mINP": m}, "ari": {}, "total_s": 1.0}

    runs = [run("untrained", 0, 0.1), run("untrained", 1, 0.1), run("oracle", 0, 0.5), run("oracle", 1, 0.5),
            run("r", 0, 0.2), run("r", 1, 0.4)]
    rows = {r["variant"]: r for r in aggregate(runs)}
    assert rows["r"]["gap_closed"] == pytest.approx(0.5)
    assert rows["r"]["mAP"][1] == pytest.approx(0.1414, abs=1e-3)
    assert rows["r"]["mAP_gain_std"] == pytest.approx(0.2 / 0.1414, abs=1e-2)


def test_one_seed_has_no_gain_in_sigma():
    runs = [{"variant": v, "seed": 0, "eval": {"R1": m, "R5": m, "mAP": m, "mINP": m}, "ari": {}, "total_s": 1.0}
            for v, m in (("untrained", 0.1), ("oracle", 0.5), ("r", 0.2))]
    rows = aggregate(runs)
    assert all("mAP_gain_std" not in r for r in rows)
    table = format_table(rows)
    assert not re.search(r"\b(inf|nan)\b", table)


def test_pretrained_init_reaches_every_row_of_its_seed(tmp_path, capsys):
    data = tmp_path / "set"
    make_sysu(str(data), ids=20, test_ids=6, per_camera=4, size=(16, 32), seed=3)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--data", str(data), "--init", "pretrained", "--pretrain-iters", "3",
                 "--recipes", "baseline", "--seeds", "1", *TINY]) == 0
    assert "initial weights pretrained" in capsys.readouterr().out
    res = json.loads((out / "demo.json").read_text())
    pre = res["pretrain"]["0"]
    assert pre["iters"] == 3 and pre["data_seed"] == 1_000_003 and pre["ids"] >= 2
    # the pretraining set is the --data set's generator with another seed (other identities and cameras),
    # not the command line's generator arguments (--per-camera 3 in TINY)
    params = json.loads((data / "synthetic.json").read_text())["params"]
    pre_params = json.loads((out / "pretrain" / "data" / "synthetic.json").read_text())["params"]
    assert pre_params == {**params, "seed": 1_000_003} and pre_params["per_camera"] == 4
    weights = str(out / "pretrain" / "weights_s0.pt")
    state = torch.load(weights, weights_only=True)
    for name in ("untrained", "baseline"):
        cfg = json.loads((out / "runs" / f"{name}_s0" / "config.json").read_text())
        assert cfg["model"]["weights"] == weights
    # the untrained row measures the pretrained network, not the random one of the same seed
    random_out = tmp_path / "random"
    assert main(["demo", "--out", str(random_out), "--data", str(data), "--recipes", "untrained", "--seeds", "1",
                 *TINY]) == 0
    random_untrained = json.loads((random_out / "demo.json").read_text())["runs"][0]
    assert random_untrained["variant"] == "untrained"
    assert random_untrained["eval"]["mAP"] != res["runs"][0]["eval"]["mAP"]
    # and training moves away from the pretrained weights
    model, _ = load_model(str(out / "runs" / "baseline_s0" / "checkpoint.pt"))
    assert not torch.equal(model.visible.conv1.weight, state["conv1.weight"])
