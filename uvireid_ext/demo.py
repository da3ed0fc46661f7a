"""``python -m uvireid_ext demo``: the whole method end to end on a generated SYSU-MM01-shaped set, on CPU.

Writes a synthetic set (``make_sysu``), measures the untrained network (SYSU protocol R1/mAP/mINP and the
ARI of the pseudo-labels its features give), trains each recipe briefly with the small backbone, measures
again, and prints a table. Files in ``--out``: ``demo.json`` (every figure, the per-epoch logs' phase
times), ``cmc.png`` (CMC curves), one run folder per recipe (config, log.jsonl, checkpoint).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import torch

from .config import make_config
from .train import Trainer, load_eval_set, load_train_set

__all__ = ["VARIANTS", "main", "plot_cmc"]

logger = logging.getLogger(__name__)

# name → (recipe, overrides of RecipeConfig): the three recipes, then the ablation's extra variants.
VARIANTS: dict[str, tuple[str, dict]] = {
    "baseline": ("baseline", {}),
    "mmm": ("mmm", {}),
    "ecul": ("ecul", {}),
    "baseline+MMLM": ("mmm", {"objectives": ["cluster_nce"]}),
    "baseline+MMLM+SCA": ("mmm", {"objectives": ["cluster_nce", "sca"]}),
    "ecul w/o EMCC": ("ecul", {"clustering": "baseline"}),
    "ecul w/o TSMem": ("ecul", {"tsmem_switch": None}),
}
ABLATION = ("baseline", "baseline+MMLM", "baseline+MMLM+SCA", "mmm", "ecul", "ecul w/o EMCC", "ecul w/o TSMem")
ARI_KEY = "outliers_singletons"

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127)]


def plot_cmc(curves: dict[str, list[float]], path: str) -> None:
    """CMC curves (rank 1..R) as a PNG: matplotlib when importable, else drawn with Pillow."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, cmc in curves.items():
            ax.plot(range(1, len(cmc) + 1), [100 * c for c in cmc], marker="o", ms=3, label=name)
        ax.set_xlabel("rank")
        ax.set_ylabel("matching rate (%)")
        ax.set_title("CMC, synthetic SYSU-MM01 (all-search)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return
    except ImportError:
        pass
    from PIL import Image, ImageDraw

    w, h, left, right, top, bottom = 720, 480, 60, 200, 30, 50
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    pw, ph = w - left - right, h - top - bottom
    d.rectangle([left, top, left + pw, top + ph], outline="black")
    ranks = max((len(c) for c in curves.values()), default=1)

    def xy(rank: int, value: float) -> tuple[float, float]:
        x = left + (rank - 1) / max(ranks - 1, 1) * pw
        return x, top + (1 - value) * ph

    for v in range(0, 101, 20):
        y = top + (1 - v / 100) * ph
        d.line([left, y, left + pw, y], fill=(225, 225, 225))
        d.text((left - 30, y - 6), f"{v}%", fill="black")
    for r in range(1, ranks + 1, max(1, ranks // 10)):
        x, _ = xy(r, 0)
        d.text((x - 4, top + ph + 6), str(r), fill="black")
    d.text((left + pw // 2 - 15, h - 22), "rank", fill="black")
    d.text((left, 8), "CMC, synthetic SYSU-MM01 (all-search)", fill="black")
    for i, (name, cmc) in enumerate(curves.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        pts = [xy(r + 1, c) for r, c in enumerate(cmc)]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        for x, y in pts:
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        ly = top + 10 + 18 * i
        d.line([left + pw + 12, ly + 6, left + pw + 32, ly + 6], fill=colour, width=3)
        d.text((left + pw + 38, ly), name, fill="black")
    im.save(path)


def _row(name: str, ev: dict, ari: dict, times: dict, total: float) -> dict:
    return {
        "variant": name,
        "R1": ev["R1"], "R5": ev["R5"], "mAP": ev["mAP"], "mINP": ev["mINP"],
        "ARI_visible": ari.get("visible", {}).get(ARI_KEY, float("nan")),
        "ARI_cross_modality": ari.get("cross_modality", {}).get(ARI_KEY),
        "ARI_infrared": ari.get("infrared", {}).get(ARI_KEY, float("nan")),
        "time_per_epoch": times, "total_s": total,
    }


def format_table(rows: list[dict]) -> str:
    head = (f"{'variant':<20} {'R1':>6} {'R5':>6} {'mAP':>6} {'mINP':>6} {'ARI-v':>6} {'ARI-i':>6} "
            f"{'extract':>8} {'cluster':>8} {'memory':>7} {'train':>7} {'eval':>6} {'total':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        t = r["time_per_epoch"]
        lines.append(
            f"{r['variant']:<20} {100 * r['R1']:6.1f} {100 * r['R5']:6.1f} {100 * r['mAP']:6.1f} "
            f"{100 * r['mINP']:6.1f} {r['ARI_visible']:6.3f} {r['ARI_infrared']:6.3f} "
            + " ".join(f"{t.get(k, 0.0):{w}.2f}" for k, w in (("extract", 8), ("cluster", 8), ("memories", 7),
                                                              ("train", 7), ("eval", 6)))
            + f" {r['total_s']:7.1f}"
        )
    lines.append(f"R1/R5/mAP/mINP in %, SYSU all-search single-shot; ARI of the pseudo-labels ({ARI_KEY}) the "
                 "final network's features give; times in s per epoch (phases), total s per run")
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> dict:
    t_all = time.perf_counter()
    from .data.synthetic import make_sysu

    if args.threads:
        torch.set_num_threads(args.threads)
    data = os.path.join(args.out, "data")
    if not os.path.isfile(os.path.join(data, "exp", "test_id.txt")):
        t = time.perf_counter()
        make_sysu(data, ids=args.ids, seed=args.seed, size=(args.width, args.height))
        logger.info("demo: synthetic SYSU-MM01-shaped set written to %s in %.1f s", data, time.perf_counter() - t)
    train_set = load_train_set("sysu", data, args.height, args.width)
    eval_set = load_eval_set("sysu", data, args.height, args.width, trials=args.trials)
    logger.info("demo: %d training images (%d visible), %d queries, %d trials", len(train_set),
                int((train_set.modality == 0).sum()), len(eval_set.query), len(eval_set.galleries))

    def config(recipe: str, overrides: dict, name: str):  # noqa: ANN202
        return make_config(recipe, args.epochs, {
            "data": {"data_root": data, "height": args.height, "width": args.width, "eval_trials": args.trials,
                     "eval_every": 0},
            "model": {"arch": "small"},
            "optim": {"iters": args.iters, "ids_per_batch": args.p, "instances": args.k, "lr": args.lr,
                      "step_size": max(1, args.epochs * 2 // 3)},
            "recipe": {"eps": args.eps, **overrides},
            "run": {"output": os.path.join(args.out, "runs", name.replace(" ", "_").replace("/", "")),
                    "device": "cpu", "seed": args.seed, "threads": args.threads, "progress": False},
        })

    names = list(ABLATION) if args.ablation else [n for n in args.recipes.split(",") if n]
    for n in names:
        if n not in VARIANTS:
            raise ValueError(f"demo: unknown recipe {n!r}; known: {', '.join(VARIANTS)}")
    # The untrained network: same initialisation (seed) as every recipe's start.
    t = time.perf_counter()
    probe = Trainer(config("baseline", {}, "untrained"), train_set, eval_set).probe()
    rows = [_row("untrained", probe["eval"], probe["ari"], {"eval": probe["time"]["eval"]},
                 time.perf_counter() - t)]
    curves = {"untrained": probe["eval"]["cmc"]}
    for name in names:
        recipe, overrides = VARIANTS[name]
        t = time.perf_counter()
        trainer = Trainer(config(recipe, overrides, name), train_set, eval_set)
        history = trainer.fit()
        final = trainer.probe(evaluate=False)
        ev = history[-1]["eval"]
        times = {k: sum(h["time"].get(k, 0.0) for h in history) / len(history)
                 for k in ("extract", "cluster", "memories", "train")}
        times["eval"] = history[-1]["time"].get("eval", 0.0)
        rows.append(_row(name, ev, final["ari"], times, time.perf_counter() - t))
        curves[name] = ev["cmc"]
        logger.info("demo: %s done in %.1f s: R1 %.1f%%", name, rows[-1]["total_s"], 100 * ev["R1"])
    table = format_table(rows)
    print(table)
    plot_cmc(curves, os.path.join(args.out, "cmc.png"))
    settings = {k: v for k, v in vars(args).items() if not callable(v)}
    out = {"rows": rows, "cmc": curves, "args": settings, "wall_s": time.perf_counter() - t_all,
           "train_images": len(train_set), "queries": len(eval_set.query)}
    with open(os.path.join(args.out, "demo.json"), "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {os.path.join(args.out, 'demo.json')} and {os.path.join(args.out, 'cmc.png')}; "
          f"demo wall time {out['wall_s']:.1f} s")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder (data, runs, demo.json, cmc.png)")
    p.add_argument("--recipes", default="baseline,mmm,ecul", help=f"comma-separated, from: {', '.join(VARIANTS)}")
    p.add_argument("--ablation", action="store_true", help="run the ablation variants instead: " + ", ".join(ABLATION))
    p.add_argument("--ids", type=int, default=64, help="identities of the synthetic set")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--p", type=int, default=8, help="identities per batch")
    p.add_argument("--k", type=int, default=4, help="images per identity and modality")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eps", type=float, default=0.5, help="DBSCAN eps of the demo's clustering")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is reliably fast on a shared machine; 0: torch's default)")
    p.add_argument("--seed", type=int, default=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m uvireid_ext demo", description=__doc__)
    add_arguments(p)
    run_demo(p.parse_args(argv))
    return 0
