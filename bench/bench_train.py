"""Benchmark: one training epoch of a recipe at SYSU-MM01 size, phase by phase.

Reports training images/s (forward + backward + step + memory updates; a batch is P·K visible images in
two views plus P·K infrared), extraction images/s (flip-averaged features of every training image: two
forward passes each, counted as one image), and the time of every phase of the epoch (extract, cluster,
memories, train). Targets on one H100 (issue 6): clustering <= 1 s per epoch, extraction >= 8,000 img/s,
training >= 2,000 img/s with bf16.

The images are generated on the device (no data set needed): per identity a coarse random body pattern,
per image a jitter, per camera a gain, infrared images grey; 22,258 visible + 11,909 infrared at 288 x 144
like SYSU-MM01. A first short epoch warms up (cuDNN autotuning, allocator); the second is measured.

    python -m uvireid_ext bench train [--device cuda] [--recipe ecul] [--iters 200] [--size sysu|tiny] [--out DIR]

On CPU the default size is ``tiny`` (600 images at 64 x 32, the small backbone) so it runs here.
Writes <out>/train_<size>_<device>.{json,md}; the trainer's own files go to a temporary folder, removed after.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench._report import argument_parser, write  # noqa: E402
from uvireid_ext.config import make_config  # noqa: E402
from uvireid_ext.modality import Modality  # noqa: E402
from uvireid_ext.train import Trainer, TrainSet  # noqa: E402

SIZES = {  # visible, infrared, identities, height, width, arch
    "sysu": (22_258, 11_909, 395, 288, 144, "resnet50"),
    "tiny": (400, 200, 20, 64, 32, "small"),
}


def synthetic_set(n_v: int, n_r: int, ids: int, h: int, w: int, device: torch.device, seed: int = 0) -> TrainSet:
    g = torch.Generator(device=device).manual_seed(seed)
    n = n_v + n_r
    pid = torch.cat([torch.arange(n_v, device=device) % ids, torch.arange(n_r, device=device) % ids])
    modality = torch.cat([torch.zeros(n_v, dtype=torch.long, device=device),
                          torch.ones(n_r, dtype=torch.long, device=device)])
    step = torch.arange(n, device=device) // ids
    camera = torch.where(modality == Modality.VISIBLE, torch.tensor([0, 1, 3, 4], device=device)[step % 4],
                         torch.tensor([2, 5], device=device)[step % 2])
    pattern = torch.rand(ids, 3, 12, 6, generator=g, device=device)
    gain = 0.7 + 0.6 * torch.rand(6, generator=g, device=device)
    images = torch.empty(n, h, w, 3, dtype=torch.uint8, device=device)
    for s in range(0, n, 2048):  # chunks keep the float intermediate small
        sl = slice(s, min(s + 2048, n))
        base = pattern[pid[sl]]
        gray = base.mean(1, keepdim=True).expand_as(base)
        base = torch.where((modality[sl] == 1)[:, None, None, None], gray, base)
        base = base * gain[camera[sl]][:, None, None, None]
        x = torch.nn.functional.interpolate(base, (h, w), mode="bilinear", align_corners=False)
        x = x + 0.08 * torch.randn(x.shape, generator=g, device=device)
        images[sl] = (x.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1)
    return TrainSet(images, modality.cpu(), camera.cpu(), pid.cpu())


def parser() -> argparse.ArgumentParser:
    p = argument_parser(__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cuda or cpu (default: cuda when available, else cpu)")
    p.add_argument("--size", choices=sorted(SIZES), default=None,
                   help="image set: sysu (SYSU-MM01 size) or tiny (default: sysu on CUDA, tiny on CPU)")
    p.add_argument("--recipe", default="ecul", choices=["baseline", "mmm", "ecul"], help="training recipe")
    p.add_argument("--iters", type=int, default=None,
                   help="iterations of the measured epoch (default: 200 with sysu, 5 with tiny)")
    p.add_argument("--ids-per-batch", type=int, default=8, help="identities per batch (P)")
    p.add_argument("--instances", type=int, default=16, help="images per identity and modality (K)")
    p.add_argument("--extract-batch", type=int, default=512, help="batch size of feature extraction")
    p.add_argument("--no-amp", action="store_true", help="float32 instead of bf16 autocast")
    p.add_argument("--arch", default=None, help="backbone (default: resnet50 with sysu, small with tiny)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    device = torch.device(args.device)
    size = args.size or ("sysu" if device.type == "cuda" else "tiny")
    n_v, n_r, ids, h, w, arch = SIZES[size]
    arch = args.arch or arch
    iters = args.iters or (200 if size == "sysu" else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    t = time.perf_counter()
    data = synthetic_set(n_v, n_r, ids, h, w, device)
    t_data = time.perf_counter() - t
    epochs = 4  # the stage boundaries of the preset scale with it; epoch 2 has joint clustering on
    with tempfile.TemporaryDirectory(prefix="bench_train_") as scratch:
        cfg = make_config(args.recipe, epochs, {
            "data": {"height": h, "width": w},
            "model": {"arch": arch},
            "optim": {"iters": 3, "ids_per_batch": args.ids_per_batch, "instances": args.instances,
                      "extract_batch": args.extract_batch},
            "run": {"output": scratch, "device": str(device), "amp": not args.no_amp, "progress": False},
        })
        trainer = Trainer(cfg, data, None)
        trainer.run_epoch(0)  # warm-up
        trainer.cfg.optim.iters = iters
        rec = trainer.run_epoch(2)  # joint clustering, CMA and instance memories active (ecul)
    n = len(data)
    tm = rec["time"]
    row = {
        "recipe": args.recipe, "size": size, "arch": arch, "images": n, "HxW": f"{h}x{w}",
        "batch": 3 * args.ids_per_batch * args.instances, "iters": iters,
        "amp": "bf16" if device.type == "cuda" and not args.no_amp else "fp32",
        "extract_s": round(tm["extract"], 3), "extract_img_s": round(n / tm["extract"], 1),
        "cluster_s": round(tm["cluster"], 3), "memories_s": round(tm["memories"], 3),
        "train_s": round(tm["train"], 3), "train_img_s": round(rec.get("train_img_per_s", 0.0), 1),
        "clusters_v/r/joint": f"{rec.get('clusters_visible')}/{rec.get('clusters_infrared')}/"
                              f"{rec.get('clusters_joint')}",
        "epoch_s": round(sum(tm.values()), 2),
        "data_gen_s": round(t_data, 2),
    }
    if size == "sysu":  # a 100-epoch run at this pace (evaluation excluded)
        row["100_epochs_min"] = round(100 * sum(tm.values()) / 60, 1)
    cols = list(row)
    write(args.out, f"train_{size}", device.type, [row], cols)


if __name__ == "__main__":
    main()
