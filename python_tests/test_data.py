"""SYSU-MM01 / RegDB loaders: layout, ordering, and the standard seeded gallery sampling."""

import os
import random

import numpy as np
import pytest

from uvireid_ext.data import regdb, sysu


def fake_sysu(root, seed=0):
    """A SYSU tree of empty files with uneven folder sizes and identities missing from some cameras."""
    rng = np.random.default_rng(seed)
    ids = [1, 2, 3, 5, 8, 13, 21, 34]
    os.makedirs(root / "exp")
    (root / "exp" / "test_id.txt").write_text("21,3,8,1,34\n")
    (root / "exp" / "train_id.txt").write_text("2,13\n")
    (root / "exp" / "val_id.txt").write_text("5\n")
    for cam in range(1, 7):
        os.makedirs(root / f"cam{cam}")
        for pid in ids:
            if rng.random() < 0.25:
                continue  # this identity is not in this camera
            folder = root / f"cam{cam}" / f"{pid:04d}"
            os.makedirs(folder)
            for i in rng.permutation(int(rng.integers(10, 16))) + 1:  # created out of order
                (folder / f"{i:04d}.jpg").write_bytes(b"")
    return root


def expected_gallery(root, cams, trial, shot):
    """The standard procedure, written out: global random.seed(trial); for each test id in sorted
    zero-padded order, for each camera in order, sort the folder's paths, choice/sample."""
    random.seed(trial)
    with open(os.path.join(root, "exp", "test_id.txt")) as f:
        ids = [f"{int(y):04d}" for y in f.read().splitlines()[0].split(",")]
    out = []
    for pid in sorted(ids):
        for cam in cams:
            d = os.path.join(root, cam, pid)
            if os.path.isdir(d):
                files = sorted([d + "/" + i for i in os.listdir(d)])
                if shot == 1:
                    out.append(random.choice(files))
                else:
                    out.extend(random.sample(files, shot))
    return out


@pytest.mark.parametrize("mode", ["all", "indoor"])
@pytest.mark.parametrize("shot", [1, 10])
def test_gallery_reproduces_seeded_sampling(tmp_path, mode, shot):
    root = str(fake_sysu(tmp_path))
    cams = ["cam1", "cam2", "cam4", "cam5"] if mode == "all" else ["cam1", "cam2"]
    state = random.getstate()
    for trial in range(10):
        files, pids, camids = sysu.process_gallery_sysu(root, mode=mode, trial=trial, shot=shot)
        assert random.getstate() == state  # the global generator is left alone
        want = expected_gallery(root, cams, trial, shot)
        random.setstate(state)
        assert files == want
        assert pids.tolist() == [int(p[-13:-9]) for p in want]  # the standard fixed-offset parse
        assert camids.tolist() == [int(p[-15]) for p in want]
    # single-shot draws differ across trials (the seed is used)
    g0 = sysu.process_gallery_sysu(root, mode=mode, trial=0)[0]
    g1 = sysu.process_gallery_sysu(root, mode=mode, trial=1)[0]
    assert g0 != g1


def test_query_is_all_ir_images_of_test_ids(tmp_path):
    root = fake_sysu(tmp_path)
    files, pids, camids = sysu.process_query_sysu(str(root), mode="indoor")
    want = []
    for pid in sorted(f"{i:04d}" for i in (21, 3, 8, 1, 34)):
        for cam in ("cam3", "cam6"):
            d = root / cam / pid
            if d.is_dir():
                want += [f"{d}/{n}" for n in sorted(os.listdir(d))]
    assert files == want and len(files) > 0
    assert set(camids.tolist()) <= {3, 6}
    assert set(pids.tolist()) <= {21, 3, 8, 1, 34}
    assert sysu.process_query_sysu(str(root), mode="all")[0] == files


def test_sysu_missing_and_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cam3 not found; expected layout:\n.*cam1 \.\.\. cam6"):
        sysu.process_query_sysu(str(tmp_path))
    root = fake_sysu(tmp_path / "d")
    os.remove(root / "exp" / "test_id.txt")
    with pytest.raises(FileNotFoundError, match=r"exp/test_id.txt not found; expected layout"):
        sysu.process_gallery_sysu(str(root))
    (root / "exp" / "test_id.txt").write_text("1, x\n")
    with pytest.raises(ValueError, match="comma-separated integers"):
        sysu.process_query_sysu(str(root))
    with pytest.raises(ValueError, match="mode must be 'all' or 'indoor'"):
        sysu.process_query_sysu(str(root), mode="outdoor")
    (root / "exp" / "test_id.txt").write_text("1,3\n")
    with pytest.raises(ValueError, match="fewer than shot=100"):
        sysu.process_gallery_sysu(str(root), shot=100)
    with pytest.raises(FileNotFoundError, match="train_rgb_resized_img.npy not found"):
        sysu.load_sysu_train(str(root))


def fake_regdb(root):
    os.makedirs(root / "idx")
    for trial in range(1, 11):
        for split in ("train", "test"):
            for mod, tag, folder in (("visible", "v", "Visible"), ("thermal", "t", "Thermal")):
                lines = []
                for label, pid in enumerate([trial, trial + 20]):
                    for k in range(1, 3):
                        rel = f"{folder}/{pid}/male_front_{tag}_{pid:05d}_{k}.bmp"
                        os.makedirs(root / folder / str(pid), exist_ok=True)
                        (root / rel).write_bytes(b"")
                        lines.append(f"{rel} {label + (0 if split == 'train' else 100)}")
                (root / "idx" / f"{split}_{mod}_{trial}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_regdb_lists(tmp_path):
    root = fake_regdb(tmp_path)
    files, labels = regdb.process_test_regdb(str(root), trial=3, modality="thermal")
    assert files[0] == os.path.join(str(root), "Thermal/3/male_front_t_00003_1.bmp")
    assert labels.tolist() == [100, 100, 101, 101]
    v, vl, t, tl = regdb.load_regdb_train(str(root), trial=10)
    assert len(v) == len(t) == 4 and vl.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="trial must be 1..10, got 0"):
        regdb.process_test_regdb(str(root), trial=0)
    os.remove(root / "Thermal/3/male_front_t_00003_1.bmp")
    with pytest.raises(FileNotFoundError, match=r"male_front_t_00003_1.bmp not found; expected layout"):
        regdb.process_test_regdb(str(root), trial=3, modality="thermal")
    (root / "idx" / "test_visible_2.txt").write_text("Visible/2/a.bmp\n")
    with pytest.raises(ValueError, match=r"test_visible_2.txt:1: expected '<relative path> <integer"):
        regdb.process_test_regdb(str(root), trial=2)
    with pytest.raises(
        FileNotFoundError, match=r"idx/test_visible_1.txt not found; expected layout:\n.*Visible"
    ):
        regdb.process_test_regdb(str(tmp_path / "nothing"), trial=1)
