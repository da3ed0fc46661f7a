"""``python -m uvireid_ext demo``: the learning benchmark on a generated SYSU-MM01-shaped set, on CPU.

Writes a synthetic set (``make_sysu``: 96 test identities, so chance rank-1 is about 1 %), then for every
seed measures the bounds and the recipes on the same data, loop and budget:

* ``untrained``: the initial network (the lower bound; every row starts from it, same seed same weights);
* ``oracle``: the same loop trained on the ground-truth identities, with the joint cross-modality memory
  from the first epoch (the upper bound);
* ``baseline``, ``mmm``, ``ecul`` (and with ``--ablation`` their variants): pseudo-labels from clustering.

Every row starts from random weights, or with ``--init pretrained`` from a visible-only identity
pretraining on a second generated set (``uvireid_ext.pretrain``), the stand-in for the ImageNet weights the
published recipes start from; the untrained row is then the pretrained network.

Prints a table (mean ± std over the seeds of R1, mAP, mINP, pseudo-label ARI; how far the final training
features mix the modalities; how much of the oracle − untrained mAP gap each row closes; its mAP and R1 gain
over the untrained network in standard deviations) and
writes to ``--out``: ``demo.json`` (every figure of every run, per epoch), ``demo.md`` (the table),
``cmc.png`` (CMC curves) and ``curves.png`` (pseudo-label ARI and mAP per epoch), plus one run folder
per (row, seed) with its config, log and checkpoint. ``docs/synthetic.md`` describes the data.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time

import torch

from .checkpoint import atomic_save
from .config import make_config
from .data.synthetic import make_sysu, read_marker
from .data.transforms import crop_pad
from .metrics import MIXING_K
from .modality import Modality
from .plots import Panel, save_panels
from .pretrain import pretrain_visible
from .train import Trainer, load_eval_set, load_train_set

__all__ = ["ABLATION", "VARIANTS", "format_table", "main", "run_demo"]

logger = logging.getLogger(__name__)

# name → (recipe, overrides of RecipeConfig). "untrained" is measured, never trained.
VARIANTS: dict[str, tuple[str, dict]] = {
    "untrained": ("baseline", {}),
    "oracle": ("baseline", {"oracle_labels": True, "joint_start": 0}),
    "baseline": ("baseline", {}),
    "mmm": ("mmm", {}),
    "ecul": ("ecul", {}),
    "baseline+MMLM": ("mmm", {"objectives": ["cluster_nce"]}),
    "baseline+MMLM+SCA": ("mmm", {"objectives": ["cluster_nce", "sca"]}),
    "ecul w/o EMCC": ("ecul", {"clustering": "baseline"}),
    "ecul w/o TSMem": ("ecul", {"tsmem_switch": None}),
}
DEFAULT_ROWS = ("oracle", "baseline", "mmm", "ecul")
ABLATION = ("oracle", "baseline", "baseline+MMLM", "baseline+MMLM+SCA", "mmm", "ecul", "ecul w/o EMCC",
            "ecul w/o TSMem")
# The pretraining set is the training set's generator with its seed moved this far: independent identities
# and cameras, and out of the way of the small data seeds users choose for their own sets.
PRETRAIN_SEED_OFFSET = 1_000_000
ARI_KEY = "outliers_singletons"  # outliers as singletons: a clustering that drops everything scores 0


def parse_seeds(text: str) -> list[int]:
    """``"3"`` → seeds 0, 1, 2; ``"0,5,7"`` → those seeds. An empty list is an error."""
    parts = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        values = [int(t) for t in parts]
    except ValueError as e:
        raise ValueError(f"demo: --seeds takes a count or a comma-separated list of integers, got {text!r}") from e
    seeds = list(range(values[0])) if len(values) == 1 else values
    if not seeds:
        raise ValueError(f"demo: --seeds {text!r} gives no seed; give a count >= 1 or a list")
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"demo: --seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def _ari(ari: dict) -> dict[str, float]:
    """The ARI entries of one clustering, by set (``outliers_singletons`` convention)."""
    return {k: v[ARI_KEY] for k, v in (ari or {}).items() if isinstance(v, dict) and ARI_KEY in v}


def _intra(ari: dict[str, float]) -> float:
    vals = [ari[k] for k in ("visible", "infrared") if k in ari]
    return sum(vals) / len(vals) if vals else float("nan")


class _Run:
    """One (row, seed): the trainer, its per-epoch curve and the final figures."""

    def __init__(self, name: str, seed: int, args: argparse.Namespace, data: str, train_set: object,
                 eval_set: object, tag: str, weights: str | None = None) -> None:
        recipe, overrides = VARIANTS[name]
        self.name, self.seed, self.tag = name, seed, tag
        self.epochs = args.epochs
        cfg = make_config(recipe, args.epochs, {
            "data": {"data_root": data, "height": args.height, "width": args.width, "eval_trials": args.trials,
                     "eval_every": 1},
            "model": {"arch": "small", "weights": weights},
            "optim": {"iters": args.iters, "ids_per_batch": args.p, "instances": args.k, "lr": args.lr,
                      "step_size": max(1, args.epochs * 2 // 3)},
            "recipe": {"eps": args.eps, **overrides},
            "run": {"output": os.path.join(args.out, "runs", f"{name.replace(' ', '_').replace('/', '')}_s{seed}"),
                    "device": "cpu", "seed": seed, "threads": args.threads, "progress": False},
        })
        self.trainer = Trainer(cfg, train_set, eval_set, on_epoch=self._on_epoch)
        self.curve: list[dict] = []

    def _probe(self, mixing: bool = False) -> dict:
        """The probe of the network now, with the ARI of the clustering its features give (for the oracle
        too: its training labels are the ground truth, so its own log says 1.0)."""
        r = self.trainer.cfg.recipe
        oracle, r.oracle_labels = r.oracle_labels, False
        try:
            probe = self.trainer.probe(evaluate=False, mixing=mixing)
        finally:
            r.oracle_labels = oracle
        return {**probe, "ari": _ari(probe["ari"])}

    def _on_epoch(self, rec: dict) -> None:
        e = rec["epoch"]
        ari = self._probe()["ari"] if self.trainer.cfg.recipe.oracle_labels else _ari(rec.get("ari", {}))
        ev = rec.get("eval") or {}
        point = {"epoch": e + 1, "mAP": ev.get("mAP"), "R1": ev.get("R1"), "loss": rec.get("loss", {}),
                 "clusters": {k: v for k, v in rec.items() if k.startswith("clusters")}, "time": rec["time"]}
        if self.trainer.cfg.recipe.oracle_labels:
            point["ari"] = ari  # after this epoch's training
        else:
            point["ari_start"] = ari  # the labels this epoch trained on: the features after e epochs
        self.curve.append(point)
        logger.info("demo: %s %s epoch %d/%d: mAP %.1f%%, R1 %.1f%%, ARI (v/i) %s", self.tag, self.name, e + 1,
                    self.epochs, 100 * (ev.get("mAP") or float("nan")), 100 * (ev.get("R1") or float("nan")),
                    "/".join(f"{ari.get(k, float('nan')):.3f}" for k in ("visible", "infrared")))

    def measure_untrained(self) -> dict:
        probe = self._probe(mixing=True)
        return {"eval": self.trainer.evaluate(), "ari": probe["ari"], "mixing": probe["mixing"], "curve": []}

    def train(self) -> dict:
        self.trainer.fit()
        probe = self._probe(mixing=True)
        final_ari = probe["ari"]
        ev = self.trainer.evaluate()
        # ARI per epoch on one axis (epochs trained): recipes log the labels each epoch starts from
        # (epoch e: after e epochs), the oracle's probe runs after each epoch (e + 1), plus the final probe.
        ari_curve = [(p["epoch"] - 1, _intra(p["ari_start"])) for p in self.curve if "ari_start" in p]
        ari_curve += [(p["epoch"], _intra(p["ari"])) for p in self.curve if "ari" in p]
        if not self.trainer.cfg.recipe.oracle_labels:
            ari_curve.append((self.epochs, _intra(final_ari)))
        return {"eval": ev, "ari": final_ari, "mixing": probe["mixing"], "curve": self.curve, "ari_curve": ari_curve,
                "map_curve": [(p["epoch"], p["mAP"]) for p in self.curve]}


def _stats(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return mean, std


def aggregate(runs: list[dict]) -> list[dict]:
    """Mean ± std per row over its seeds, gap closed and mAP / R1 gain over the untrained network in stds."""
    names = list(dict.fromkeys(r["variant"] for r in runs))
    rows = []
    for name in names:
        mine = [r for r in runs if r["variant"] == name]
        row: dict = {"variant": name, "seeds": [r["seed"] for r in mine]}
        for key in ("R1", "R5", "mAP", "mINP"):
            row[key] = _stats([r["eval"][key] for r in mine])
        for key in ("visible", "infrared", "joint", "cross_modality"):
            vals = [r["ari"][key] for r in mine if key in r["ari"]]
            if vals:
                row[f"ARI_{key}"] = _stats(vals)
        for key in ("cross_share", "cross_nn_precision"):
            row[key] = _stats([r["mixing"][key] for r in mine if "mixing" in r])
        row["total_s"] = _stats([r["total_s"] for r in mine])
        rows.append(row)
    by = {r["variant"]: r for r in rows}
    lo, hi = by.get("untrained"), by.get("oracle")
    for row in rows:
        if lo is not None and len(row["seeds"]) > 1:  # one seed has no spread to measure the gain in
            for key in ("R1", "mAP"):
                spread = max(row[key][1], lo[key][1])
                gain = row[key][0] - lo[key][0]
                row[f"{key}_gain_std"] = gain / spread if spread > 0 else float("inf") if gain > 0 else float("nan")
        if lo is not None and hi is not None and hi["mAP"][0] > lo["mAP"][0]:
            row["gap_closed"] = (row["mAP"][0] - lo["mAP"][0]) / (hi["mAP"][0] - lo["mAP"][0])
    return rows


def _pm(v: tuple[float, float], scale: float = 100.0, digits: int = 1) -> str:
    if not math.isfinite(v[0]):
        return "–"
    return f"{scale * v[0]:.{digits}f} ± {scale * v[1]:.{digits}f}"


def _sigma(row: dict, key: str) -> str:
    v = row.get(f"{key}_gain_std", math.nan)
    return "–" if row["variant"] == "untrained" or not math.isfinite(v) else f"{v:.1f}"


def format_table(rows: list[dict], markdown: bool = False, init: str = "random") -> str:
    head = ["variant", "R1 %", "mAP %", "mINP %", "ARI visible", "ARI infrared", f"cross@{MIXING_K} %",
            "cross NN %", "gap closed", "ΔmAP/σ", "ΔR1/σ", "s / run"]
    lines = []
    for r in rows:
        gap = r.get("gap_closed")
        lines.append([
            r["variant"], _pm(r["R1"]), _pm(r["mAP"]), _pm(r["mINP"]),
            _pm(r.get("ARI_visible", (float("nan"),) * 2), 1, 3), _pm(r.get("ARI_infrared", (float("nan"),) * 2), 1, 3),
            _pm(r.get("cross_share", (float("nan"),) * 2)), _pm(r.get("cross_nn_precision", (float("nan"),) * 2)),
            "–" if gap is None or r["variant"] in ("untrained", "oracle") else f"{100 * gap:.0f} %",
            _sigma(r, "mAP"), _sigma(r, "R1"),
            f"{r['total_s'][0]:.0f}",
        ])
    seeds = rows[0]["seeds"] if rows else []
    start = ("initial weights pretrained per seed on the visible images of other generated identities (the "
             "stand-in for ImageNet weights)" if init == "pretrained" else "initial weights random")
    note = (f"{start}; mean ± std over {len(seeds)} seed(s) {seeds}; SYSU-MM01 all-search single-shot protocol; "
            "ARI of the "
            f"pseudo-labels the final network's features give ({ARI_KEY}); on the training features: cross@{MIXING_K} "
            f"= share of the other modality among each image's {MIXING_K} nearest other images (all of them in a "
            "smaller set), cross NN = share of images whose nearest image of the other modality has their identity "
            "(of the images whose identity the other modality holds); gap closed = share of the oracle − "
            "untrained mAP gap; Δ/σ = gain over the untrained network in units of the larger std of the two (from "
            "2 seeds on)")
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out) + "\n\n" + note + "\n"
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), "-" * (sum(widths) + 2 * len(widths))]
    out += [fmt.format(*cells) for cells in lines]
    return "\n".join(out) + "\n" + note


def _mean_curve(runs: list[dict], key: str) -> tuple[list[float], list[float]]:
    points: dict[float, list[float]] = {}
    for r in runs:
        for x, y in r.get(key, []):
            if y is not None and math.isfinite(y):
                points.setdefault(x, []).append(y)
    xs = sorted(points)
    return xs, [sum(points[x]) / len(points[x]) for x in xs]


def write_plots(runs: list[dict], out: str) -> tuple[str, str]:
    names = list(dict.fromkeys(r["variant"] for r in runs))
    cmc = Panel("CMC, synthetic SYSU-MM01 (all-search, single-shot)", "rank", "matching rate (%)", ylim=(0, 100))
    ari = Panel("pseudo-label ARI (mean of visible and infrared)", "epochs trained", "ARI", ylim=(0, 1))
    mAP = Panel("test mAP", "epochs trained", "mAP (%)")
    for name in names:
        mine = [r for r in runs if r["variant"] == name]
        curves = [r["eval"]["cmc"] for r in mine]
        n = min(len(c) for c in curves)
        cmc.series[name] = (list(range(1, n + 1)), [100 * sum(c[i] for c in curves) / len(curves) for i in range(n)])
        base = [r for r in runs if r["variant"] == "untrained" and r["seed"] in {m["seed"] for m in mine}]
        if name == "untrained":
            continue
        xa, ya = _mean_curve(mine, "ari_curve")
        if name == "oracle" and base:  # its epoch-0 clustering is the untrained network's
            xa, ya = [0.0, *xa], [_stats([_intra(b["ari"]) for b in base])[0], *ya]
        ari.series[name] = (xa, ya)
        xm, ym = _mean_curve(mine, "map_curve")
        if base:
            xm, ym = [0.0, *xm], [_stats([b["eval"]["mAP"] for b in base])[0], *ym]
        mAP.series[name] = (xm, [100 * y for y in ym])
    paths = os.path.join(out, "cmc.png"), os.path.join(out, "curves.png")
    save_panels([cmc], paths[0], names)  # one colour per variant in both files
    top = max((y for _, ys in mAP.series.values() for y in ys), default=1.0)
    mAP.ylim = (0.0, max(1.0, 1.1 * top))
    save_panels([ari, mAP], paths[1], names)
    return paths


def _generated(folder: str, want: dict) -> str:
    """``folder`` holding the set of generator parameters ``want`` (as ``synthetic.json`` records them):
    written when absent, checked to hold exactly those parameters when present."""
    rec = read_marker(folder) if os.path.isdir(folder) else None
    if rec is not None and rec.get("params") == want:
        return folder
    if os.path.isdir(folder) and os.listdir(folder):
        found = "other generator parameters" if rec else "no generator record"
        raise ValueError(f"demo: {folder} exists with {found}; remove it or choose another --out")
    t = time.perf_counter()
    make_sysu(folder, **{**want, "size": tuple(want["size"])})  # the record's keys are make_sysu's arguments
    logger.info("demo: synthetic SYSU-MM01-shaped set written to %s in %.1f s", folder, time.perf_counter() - t)
    return folder


def _prepare_data(args: argparse.Namespace) -> tuple[str, dict]:
    """The generated set to use and its generator parameters: ``--data`` as given (it must be one), else
    ``<out>/data`` from the generator arguments."""
    if args.data:
        rec = read_marker(args.data)
        if rec is None or rec.get("kind") != "sysu":
            raise ValueError(f"demo: --data {args.data} is not a set written by make_sysu (no sysu synthetic.json "
                             "record); leave --data out to generate one, or `python -m uvireid_ext make-data`")
        if rec["params"]["size"] != [args.width, args.height]:
            raise ValueError(f"demo: --data {args.data} holds {rec['params']['size'][0]}x{rec['params']['size'][1]} "
                             f"images but --width/--height ask for {args.width}x{args.height}")
        return args.data, rec["params"]
    want = {"ids": args.ids, "seed": args.data_seed, "per_camera": args.per_camera,
            "size": [args.width, args.height], "test_ids": args.test_ids, "vary_counts": True}
    return _generated(os.path.join(args.out, "data"), want), want


def _pretrained_weights(args: argparse.Namespace, params: dict, seeds: list[int]) -> tuple[dict[int, str], dict]:
    """``--init pretrained``: for every training seed, weights from :func:`pretrain_visible` on the visible
    training images of a second generated set (the training set's generator ``params`` with the seed moved
    by ``PRETRAIN_SEED_OFFSET``: other identities, other cameras, the same layout), written to
    ``<out>/pretrain/``. Returns the paths by seed and a summary per seed."""
    folder = os.path.join(args.out, "pretrain")
    want = {**params, "seed": params["seed"] + PRETRAIN_SEED_OFFSET}
    data = _generated(os.path.join(folder, "data"), want)
    pre = load_train_set("sysu", data, args.height, args.width)
    vis = pre.modality == Modality.VISIBLE
    paths, summary = {}, {}
    for seed in seeds:
        t = time.perf_counter()
        state, info = pretrain_visible(pre.images[vis], pre.pid[vis], pre.camera[vis], "small",
                                       iters=args.pretrain_iters,
                                       ids_per_batch=args.p, instances=args.k, lr=args.lr,
                                       pad=crop_pad(args.height), seed=seed)
        paths[seed] = os.path.join(folder, f"weights_s{seed}.pt")
        atomic_save(state, paths[seed])
        summary[seed] = {**info, "time_s": time.perf_counter() - t, "data_seed": want["seed"]}
        logger.info("demo: pretrained seed %d on %d visible images of %d other identities in %.0f s (loss %.2f → "
                    "%.2f): %s", seed, int(info["images"]), int(info["ids"]), summary[seed]["time_s"],
                    info["loss_first"], info["loss_last"], paths[seed])
    return paths, summary


def check_args(args: argparse.Namespace) -> tuple[list[int], list[str]]:
    """Everything cheap, before any work: seeds, rows, numbers, the generator's parameters."""
    seeds = parse_seeds(args.seeds)
    names = list(ABLATION) if args.ablation else [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"demo: unknown row {unknown[0]!r} in --recipes; known: {', '.join(VARIANTS)}")
    if not names:
        raise ValueError(f"demo: --recipes {args.recipes!r} names no row")
    for name in ("epochs", "iters", "p", "k", "trials", "ids", "test_ids", "per_camera", "width", "height"):
        if getattr(args, name) < 1:
            raise ValueError(f"demo: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.init == "pretrained" and args.pretrain_iters < 1:
        raise ValueError(f"demo: --pretrain-iters must be >= 1, got {args.pretrain_iters}")
    if args.threads < 0:
        raise ValueError(f"demo: --threads must be >= 0 (0: all cores), got {args.threads}")
    if not args.lr > 0 or not args.eps > 0:
        raise ValueError(f"demo: --lr and --eps must be > 0, got {args.lr} and {args.eps}")
    if not args.data:
        if args.test_ids > args.ids - 2:
            raise ValueError(f"demo: --test-ids must leave >= 2 training ids, got {args.test_ids} of {args.ids}")
        if min(args.width, args.height) < 8:
            raise ValueError(f"demo: --width and --height must be >= 8, got {args.width}x{args.height}")
        if args.per_camera < 2:
            raise ValueError(f"demo: --per-camera must be >= 2, got {args.per_camera}")
    elif not os.path.isdir(args.data):
        raise FileNotFoundError(f"demo: --data {args.data} not found")
    return seeds, ["untrained", *[n for n in names if n != "untrained"]]


def run_demo(args: argparse.Namespace) -> dict:
    seeds, names = check_args(args)
    t_all = time.perf_counter()
    args.threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    data, params = _prepare_data(args)
    weights: dict[int, str] = {}
    pretrain: dict = {}
    if args.init == "pretrained":
        weights, pretrain = _pretrained_weights(args, params, seeds)
    t = time.perf_counter()
    train_set = load_train_set("sysu", data, args.height, args.width)
    eval_set = load_eval_set("sysu", data, args.height, args.width, trials=args.trials)
    logger.info("demo: %d training images (%d visible) of %d identities, %d queries of %d test identities, %d "
                "trials; loaded in %.1f s", len(train_set), int((train_set.modality == Modality.VISIBLE).sum()),
                int(train_set.pid.unique().numel()), len(eval_set.query), len(set(eval_set.q_pid.tolist())),
                len(eval_set.galleries), time.perf_counter() - t)
    runs: list[dict] = []
    total = len(seeds) * len(names)
    for seed in seeds:
        for name in names:
            tag = f"[{len(runs) + 1}/{total}] seed {seed}"
            logger.info("demo: %s %s ...", tag, name)
            t = time.perf_counter()
            run = _Run(name, seed, args, data, train_set, eval_set, tag, weights.get(seed))
            res = run.measure_untrained() if name == "untrained" else run.train()
            res.update(variant=name, seed=seed, total_s=time.perf_counter() - t)
            runs.append(res)
            logger.info("demo: %s %s done in %.0f s: R1 %.1f%%, mAP %.1f%%", tag, name, res["total_s"],
                        100 * res["eval"]["R1"], 100 * res["eval"]["mAP"])
    rows = aggregate(runs)
    table = format_table(rows, init=args.init)
    print(table)
    cmc_path, curves_path = write_plots(runs, args.out)
    settings = {k: v for k, v in vars(args).items() if not callable(v)}
    out = {"rows": rows, "runs": runs, "settings": settings, "wall_s": time.perf_counter() - t_all,
           "data": read_marker(data), "train_images": len(train_set), "queries": len(eval_set.query),
           "pretrain": pretrain}
    with open(os.path.join(args.out, "demo.json"), "w") as f:
        json.dump(out, f, indent=1)
    with open(os.path.join(args.out, "demo.md"), "w") as f:
        f.write(format_table(rows, markdown=True, init=args.init))
    print(f"wrote {os.path.join(args.out, 'demo.json')}, demo.md, {cmc_path} and {curves_path}; "
          f"demo wall time {out['wall_s']:.0f} s")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder: data, runs, demo.json, demo.md, plots "
                   "(default: %(default)s)")
    p.add_argument("--data", default=None, help="use this set written by make_sysu instead of generating one")
    p.add_argument("--recipes", default=",".join(DEFAULT_ROWS),
                   help=f"rows to train besides 'untrained', comma-separated, from: {', '.join(VARIANTS)} "
                   "(default: %(default)s)")
    p.add_argument("--ablation", action="store_true", help="train the ablation rows instead: " + ", ".join(ABLATION))
    p.add_argument("--seeds", default="1", help="a count N (seeds 0..N-1) or a comma-separated list of training "
                   "seeds; the data stay the same (default: %(default)s)")
    g = p.add_argument_group("synthetic set")
    g.add_argument("--ids", type=int, default=224, help="identities in all (default: %(default)s)")
    g.add_argument("--test-ids", type=int, default=96, help="test identities (default: %(default)s)")
    g.add_argument("--per-camera", type=int, default=8, help="mean images per identity and camera "
                   "(default: %(default)s)")
    g.add_argument("--width", type=int, default=32, help="image width (default: %(default)s)")
    g.add_argument("--height", type=int, default=64, help="image height (default: %(default)s)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the generator (default: %(default)s)")
    g = p.add_argument_group("training (the same for every row)")
    g.add_argument("--epochs", type=int, default=8, help="(default: %(default)s)")
    g.add_argument("--iters", type=int, default=100, help="iterations per epoch (default: %(default)s)")
    g.add_argument("--p", type=int, default=8, help="identities per batch (default: %(default)s)")
    g.add_argument("--k", type=int, default=4, help="images per identity and modality (default: %(default)s)")
    g.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default: %(default)s)")
    g.add_argument("--eps", type=float, default=0.5, help="DBSCAN eps of the clustering (default: %(default)s)")
    g.add_argument("--trials", type=int, default=10, help="SYSU gallery trials per evaluation (default: %(default)s)")
    g.add_argument("--init", choices=("random", "pretrained"), default="random",
                   help="initial weights of every row: random, or pretrained per seed on the visible images of a "
                   "second generated set with other identities and cameras, the stand-in for the ImageNet "
                   "weights the published recipes start from (default: %(default)s)")
    g.add_argument("--pretrain-iters", type=int, default=1200, help="iterations of that pretraining, each a "
                   "batch of --p identities x --k visible images, two views of each (default: %(default)s)")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: all cores)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m uvireid_ext demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    run_demo(p.parse_args(argv))
    return 0
