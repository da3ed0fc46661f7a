"""The synthetic SYSU/RegDB generator: determinism, layout the loaders accept, modality behaviour
(the protocol end to end on it: test_protocol.py)."""

import dataclasses
import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from uvireid_ext.__main__ import main
from uvireid_ext.data import regdb, synthetic, sysu
from uvireid_ext.data.synthetic import make_camera, make_person, make_sysu, render


def tree_digest(root):
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames):
            h.update(os.path.relpath(os.path.join(dirpath, name), root).encode())
            with open(os.path.join(dirpath, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sysu")
    make_sysu(str(root), ids=14, seed=3, per_camera=10)
    return root


def test_sysu_deterministic_and_loadable(sysu_root, tmp_path):
    make_sysu(str(tmp_path / "a"), ids=14, seed=3, per_camera=10)
    assert tree_digest(tmp_path / "a") == tree_digest(sysu_root)
    make_sysu(str(tmp_path / "b"), ids=14, seed=4, per_camera=10)
    assert tree_digest(tmp_path / "b") != tree_digest(sysu_root)

    test_ids = sysu.read_ids(str(sysu_root), "test")
    train = set(sysu.read_ids(str(sysu_root), "train")) | set(sysu.read_ids(str(sysu_root), "val"))
    assert test_ids and not (set(test_ids) & train)
    q, qp, qc = sysu.process_query_sysu(str(sysu_root))
    assert set(qc.tolist()) == {3, 6} and {f"{p:04d}" for p in qp} == set(test_ids)
    for shot in (1, 10):
        g, gp, gc = sysu.process_gallery_sysu(str(sysu_root), trial=0, shot=shot)
        assert set(gc.tolist()) <= {1, 2, 4, 5} and len(g) % shot == 0
    im = Image.open(q[0])
    assert im.mode == "L" and im.size == (64, 128)
    assert Image.open(g[0]).mode == "RGB"


def test_infrared_keeps_lightness_not_hue():
    """Near-infrared: the same image for dyes of equal lightness (hue is lost), a different one when
    lightness changes; thermal (RegDB) ignores the dye altogether; visible sees every change."""
    rng = np.random.default_rng(0)
    person = make_person(rng)
    light = synthetic.lightness(person.colours)
    grey = dataclasses.replace(person, colours=np.repeat(light[:, None] * 255, 3, axis=1))
    inverted = dataclasses.replace(person, colours=255 - person.colours)
    size = (64, 128)
    nir, vis = make_camera(np.random.default_rng(1), True, size), make_camera(np.random.default_rng(2), False, size)
    thermal = make_camera(np.random.default_rng(3), "thermal", size)

    def img(p, cam):
        return np.asarray(render(p, cam, np.random.default_rng(5), size)).astype(int)

    assert np.abs(img(person, nir) - img(grey, nir)).max() <= 1
    assert np.abs(img(person, nir) - img(inverted, nir)).mean() > 2
    np.testing.assert_array_equal(img(person, thermal), img(inverted, thermal))
    assert np.abs(img(person, vis) - img(grey, vis)).mean() > 2


def test_nir_response_keeps_the_order_of_parts():
    v = np.linspace(0, 1, 101)
    r = synthetic.ir_response(v)
    assert r[0] == pytest.approx(0) and r[-1] == pytest.approx(1) and np.all(np.diff(r) > 0)
    # a print differs from its cloth in lightness, on the same material: it shows in infrared
    for seed in range(50):
        p = make_person(np.random.default_rng(seed))
        assert p.nir[synthetic.PATTERN] == p.nir[synthetic.TOP]
        light = synthetic.lightness(p.colours)
        assert abs(light[synthetic.PATTERN] - light[synthetic.TOP]) > 0.2
        ir = synthetic.part_intensity(p, "nir")
        assert abs(ir[synthetic.PATTERN] - ir[synthetic.TOP]) > 0.1


def test_sysu_test_ids_counts_and_record(tmp_path):
    counts = make_sysu(str(tmp_path / "s"), ids=20, test_ids=8, seed=1, per_camera=4, size=(16, 32))
    assert counts["test_ids"] == 8 and counts["train_ids"] + counts["val_ids"] == 12
    rec = synthetic.read_marker(str(tmp_path / "s"))
    assert rec["kind"] == "sysu" and rec["params"]["test_ids"] == 8 and rec["counts"] == counts
    sizes = [len(os.listdir(d)) for d in (tmp_path / "s").glob("cam*/*")]
    assert min(sizes) >= 2 and len(set(sizes)) > 4  # counts vary per (identity, camera)
    for pid in sysu.read_ids(str(tmp_path / "s"), "test"):  # multi-shot needs 10 per visible camera
        for cam in ("cam1", "cam2", "cam4", "cam5"):
            d = tmp_path / "s" / cam / pid
            assert not d.is_dir() or len(os.listdir(d)) >= 10
    assert synthetic.read_marker(str(tmp_path)) is None


@pytest.mark.parametrize("kwargs, match", [
    ({"ids": 5}, "ids must be >= 6"),
    ({"ids": 10, "test_ids": 9}, "test_ids must be in"),
    ({"ids": 10, "test_ids": 0}, "test_ids must be in"),
    ({"ids": 10, "per_camera": 1}, "per_camera must be >= 2"),
    ({"ids": 10, "per_camera": 5, "vary_counts": False}, "per_camera must be >= 10"),
    ({"ids": 10, "size": (4, 32)}, "size must be"),
])
def test_sysu_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_sysu(str(tmp_path / "x"), **kwargs)
    assert not (tmp_path / "x").exists()  # refused before any work


def test_prepare_sysu_arrays(sysu_root, tmp_path):
    counts = sysu.prepare_sysu(str(sysu_root))
    rgb, rgb_l, rgb_c, ir, ir_l, ir_c = sysu.load_sysu_train(str(sysu_root))
    assert rgb.shape == (counts["rgb"], 288, 144, 3) and rgb.dtype == np.uint8
    assert ir.shape == (counts["ir"], 288, 144, 3)
    assert set(ir_l.tolist()) == set(range(ir_l.max() + 1)) and set(rgb_l.tolist()) <= set(ir_l.tolist())
    assert set(rgb_c.tolist()) <= {1, 2, 4, 5} and set(ir_c.tolist()) <= {3, 6}


def test_make_data_cli(tmp_path, capsys):
    assert (
        main(["make-data", "--kind", "regdb", "--out", str(tmp_path / "r"), "--ids", "4", "--seed", "2"]) == 0
    )
    assert "wrote a synthetic regdb tree" in capsys.readouterr().out
    files, labels = regdb.process_test_regdb(str(tmp_path / "r"), trial=7, modality="visible")
    assert len(files) == 2 * 10 and sorted(set(labels.tolist())) == [0, 1]
    assert os.path.basename(files[0]).split("_")[2] == "v"
    v, vl, t, tl = regdb.load_regdb_train(str(tmp_path / "r"), trial=7)
    assert vl.tolist() == tl.tolist() and {os.path.basename(p).split("_")[2] for p in t} == {"t"}
