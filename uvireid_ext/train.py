"""The one training loop of the baseline / MMM / ECUL recipes (``uvireid_ext.config`` holds the presets).

One epoch (docs/architecture.md, "One training epoch")::

    extract   flip-averaged L2-normalised BN features of every training image (each DDP rank its share,
              all-gathered)
    cluster   pseudo-labels (rank 0, broadcast): visible, infrared, joint; MMLM label transfer (mmm);
              ARI against the ground truth when it is known
    memories  cluster memories (+ GMM confidences and prototypes for SCA, instance memories, cross-modality
              aggregation, joint memory), per the recipe and the epoch
    train     ``iters`` iterations: P ids × K images per modality (two visible views), losses, one optimiser
              step (gradients averaged over DDP ranks), memory updates with the all-gathered batch
    evaluate  SYSU-MM01 / RegDB protocol (every ``eval_every`` epochs and after the last)

Every epoch appends one JSON line to ``<output>/log.jsonl`` (time of each phase, ARI, cluster counts,
losses, metrics) and atomically replaces ``<output>/checkpoint.pt``; ``resume`` continues from it with the
same model, optimiser, scheduler, memories, RNG states and epoch. The per-epoch random streams (batch
sampling, augmentation) are derived from (seed, rank, epoch), so a resumed run draws exactly what an
uninterrupted one would. An epoch whose clustering finds no cluster is logged (``"event": "no_cluster"``),
skips its iterations, and the run goes on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .cluster import CONFIGS, INFRARED, VISIBLE, pseudo_labels
from .config import Config, config_from_dict, save_config
from .data.samplers import IdentitySampler, paired_batch
from .data.transforms import augment, normalize, to_float
from .evaluate import EvalResult, average_trials, eval_regdb, eval_sysu, pairwise_distance
from .losses import batch_hard_triplet, sca_inter, sca_intra
from .memory import ClusterMemory, InstanceMemory, TSMem, cross_modality_aggregate
from .metrics import ari
from .model import TwoStreamNet, build_model
from .ops.memory import segment_reduce

__all__ = [
    "EvalSet",
    "TrainSet",
    "Trainer",
    "evaluate_on",
    "extract_features",
    "load_eval_set",
    "load_train_set",
    "train",
]

logger = logging.getLogger(__name__)
VIS, IR = VISIBLE, INFRARED  # modality ids of the clustering code; the model's flags are VIS + 1, IR + 1


# --------------------------------------------------------------------------------------------------
# Data held in memory (uint8 HWC at the training size)


@dataclass
class TrainSet:
    images: Tensor  # [N, H, W, 3] uint8
    modality: Tensor  # [N] int64, 0 visible / 1 infrared
    camera: Tensor  # [N] int64
    pid: Tensor  # [N] int64 ground-truth identity (ARI only; -1 = unknown)

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class EvalSet:
    """Query and per-trial gallery images, loaded once."""

    dataset: str
    query: Tensor
    q_pid: np.ndarray
    q_cam: np.ndarray
    q_modality: int  # the model's flag: 1 visible, 2 infrared
    galleries: list[tuple[Tensor, np.ndarray, np.ndarray]] = field(default_factory=list)


def _load_images(paths: list[str], height: int, width: int) -> Tensor:
    from .data import read_resized

    if not paths:
        return torch.zeros(0, height, width, 3, dtype=torch.uint8)
    return torch.from_numpy(np.stack([read_resized(p, width, height) for p in paths]))


def _check_root(root: str) -> None:
    if not root:
        raise ValueError("train: no data root given (--data-root DIR)")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"train: data root not found: {root}")


def load_train_set(dataset: str, root: str, height: int, width: int, trial: int = 1) -> TrainSet:
    """The training images of SYSU-MM01 (the raw tree; the prepared ``train_*_resized_img.npy`` arrays
    when present) or of one RegDB trial, resized to height × width. A missing or unreadable image raises
    naming its path."""
    _check_root(root)
    if dataset == "sysu":
        from .data.sysu import load_sysu_train, parse_path, train_files

        if os.path.isfile(os.path.join(root, "train_rgb_resized_img.npy")):
            rv, lv, cv, ri, lr, cr = load_sysu_train(root)
            if cv is None or cr is None:
                raise FileNotFoundError(
                    f"train: {root} has prepared arrays without train_*_resized_cam.npy; re-run prepare_sysu"
                )
            imgs = torch.from_numpy(np.concatenate([rv, ri]))
            if imgs.shape[1:3] != (height, width):
                imgs = F.interpolate(imgs.permute(0, 3, 1, 2).float(), (height, width), mode="bilinear",
                                     antialias=True).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            mod = np.r_[np.zeros(len(rv)), np.ones(len(ri))]
            return TrainSet(imgs.contiguous(), torch.as_tensor(mod, dtype=torch.int64),
                            torch.as_tensor(np.r_[cv, cr], dtype=torch.int64),
                            torch.as_tensor(np.r_[lv, lr], dtype=torch.int64))
        rgb, irf = train_files(root)
        paths = rgb + irf
        cams, pids = zip(*(parse_path(p) for p in paths), strict=True) if paths else ((), ())
        mod = [VIS] * len(rgb) + [IR] * len(irf)
        return TrainSet(_load_images(paths, height, width), torch.tensor(mod, dtype=torch.int64),
                        torch.tensor(cams, dtype=torch.int64), torch.tensor(pids, dtype=torch.int64))
    if dataset == "regdb":
        from .data.regdb import load_regdb_train

        vp, vl, tp, tl = load_regdb_train(root, trial)
        n_v, n_t = len(vp), len(tp)
        return TrainSet(_load_images(vp + tp, height, width),
                        torch.tensor([VIS] * n_v + [IR] * n_t, dtype=torch.int64),
                        torch.zeros(n_v + n_t, dtype=torch.int64),  # one camera per modality
                        torch.as_tensor(np.r_[vl, tl], dtype=torch.int64))
    raise ValueError(f"train: unknown dataset {dataset!r}; expected 'sysu' or 'regdb'")


def load_eval_set(dataset: str, root: str, height: int, width: int, *, mode: str = "all", trials: int = 10,
                  trial: int = 1) -> EvalSet:
    """SYSU: infrared queries and the galleries of trials 0..trials-1 (single-shot); RegDB: the test lists
    of ``trial``, visible → thermal."""
    _check_root(root)
    if dataset == "sysu":
        from .data.sysu import process_gallery_sysu, process_query_sysu

        q, qp, qc = process_query_sysu(root, mode)
        cache: dict[str, Tensor] = {}
        out = EvalSet(dataset, _load_images(q, height, width), qp, qc, 2)
        for t in range(trials):
            g, gp, gc = process_gallery_sysu(root, mode, trial=t)
            missing = [p for p in g if p not in cache]
            for p, img in zip(missing, _load_images(missing, height, width), strict=True):
                cache[p] = img
            out.galleries.append((torch.stack([cache[p] for p in g]), gp, gc))
        return out
    if dataset == "regdb":
        from .data.regdb import process_test_regdb

        v, vp = process_test_regdb(root, trial, "visible")
        t, tp = process_test_regdb(root, trial, "thermal")
        out = EvalSet(dataset, _load_images(v, height, width), vp, np.ones_like(vp), 1)
        out.galleries.append((_load_images(t, height, width), tp, 2 * np.ones_like(tp)))
        return out
    raise ValueError(f"train: unknown dataset {dataset!r}; expected 'sysu' or 'regdb'")


# --------------------------------------------------------------------------------------------------
# Distributed helpers (no-ops in a single process)


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_gather_rows(x: Tensor) -> Tensor:
    """Concatenate every rank's rows in rank order (rows may differ in count by rank)."""
    rank, world = _dist()
    if world == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    top = int(max(s.item() for s in sizes))
    pad = x.new_zeros((top, *x.shape[1:]))
    pad[: x.shape[0]] = x
    parts = [torch.zeros_like(pad) for _ in range(world)]
    dist.all_gather(parts, pad)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])


def _broadcast(x: Tensor) -> Tensor:
    if _dist()[1] > 1:
        dist.broadcast(x, 0)
    return x


# --------------------------------------------------------------------------------------------------


def _atomic_save(obj: object, path: str) -> None:
    """Write to a temporary file, flush it to disk, then rename over ``path``: a crash leaves either
    the old checkpoint or the new one, never a torn file."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


@torch.no_grad()
def extract_features(model: TwoStreamNet, images: Tensor, is_ir: Tensor, *, device: torch.device,
                     batch: int = 256, flip: bool = True, renorm: bool = False, amp: bool = True,
                     channels_last: bool = True, with_pooled: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """BN features of uint8 ``images`` [N, H, W, 3] (``is_ir`` [N] bool picks each image's stem), in eval
    mode, L2-normalised and averaged with the flipped image's when ``flip`` (not re-normalised, as the
    clustering code does; ``renorm`` re-normalises, as the test code does). ``with_pooled`` also returns
    the GeM-pooled features of the unflipped images, as they are (MMM's prototypes), from the same pass.
    Under DDP each rank extracts every world-th image; the result is all-gathered back to dataset
    order. bf16 autocast and channels_last on CUDA."""
    rank, world = _dist()
    cuda = device.type == "cuda"
    n = images.shape[0]
    idx = torch.arange(rank, n, world)
    was = model.training
    model.eval()
    feats, pooled = [], []
    try:
        for s in range(0, idx.numel(), batch):
            sel = idx[s : s + batch]
            x = normalize(to_float(images[sel.to(images.device)].to(device, non_blocking=True)))
            if cuda and channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            m = is_ir[sel.to(is_ir.device)].to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and amp):
                p, f = model.forward_mixed(x, m)
                f = F.normalize(f.float(), dim=1)
                if with_pooled:
                    pooled.append(p.float())
                if flip:
                    f2 = model.forward_mixed(torch.flip(x, dims=[3]), m)[1].float()
                    f = (f + F.normalize(f2, dim=1)) / 2
            feats.append(f)
    finally:
        model.train(was)

    def gathered(parts: list[Tensor]) -> Tensor:
        out = _all_gather_rows(torch.cat(parts) if parts else torch.zeros(0, model.feat_dim, device=device))
        if world > 1:  # rank-strided shares back to dataset order
            order = torch.cat([torch.arange(r, n, world) for r in range(world)])
            ordered = torch.empty_like(out)
            ordered[order.to(out.device)] = out
            out = ordered
        return out

    out = gathered(feats)
    out = F.normalize(out, dim=1) if renorm else out
    return (out, gathered(pooled)) if with_pooled else out


def evaluate_on(es: EvalSet, extract: Callable[[Tensor, Tensor], Tensor]) -> dict:
    """SYSU / RegDB metrics over the eval set's trials; ``extract(images, is_ir)`` gives test features,
    L2-normalised here. Returns R1/R5/R10/mAP/mINP and the mean CMC."""
    def feats(images: Tensor, ir: bool) -> Tensor:
        return F.normalize(extract(images, torch.full((len(images),), ir)), dim=1)

    qf = feats(es.query, es.q_modality == 2)
    results: list[EvalResult] = []
    for g_img, g_pid, g_cam in es.galleries:
        dm = pairwise_distance(qf, feats(g_img, es.q_modality != 2)).cpu()
        if es.dataset == "sysu":
            results.append(eval_sysu(dm, es.q_pid, g_pid, es.q_cam, g_cam))
        else:
            results.append(eval_regdb(dm, es.q_pid, g_pid))
    mean = average_trials(results)
    cmc = mean.cmc.tolist()
    return {"R1": cmc[0], "R5": cmc[min(4, len(cmc) - 1)], "R10": cmc[min(9, len(cmc) - 1)],
            "mAP": mean.mAP, "mINP": mean.mINP, "cmc": cmc}


@dataclass
class Labels:
    """One epoch's pseudo-labels, all [N] over the training set (−1 = outlier / unused)."""

    intra: Tensor  # visible and infrared ids in their own label spaces (mmm: one shared space)
    joint: Tensor | None
    shared: bool  # True when visible and infrared ids name the same identities (MMLM)


class Trainer:
    """Holds the model, optimiser, data and run state; :meth:`fit` runs the epochs."""

    def __init__(self, cfg: Config, train_set: TrainSet | None = None, eval_set: EvalSet | None = None,
                 *, on_epoch: Callable[[dict], None] | None = None) -> None:
        self.cfg = cfg
        self.rank, self.world = _dist()
        self.device = _resolve_device(cfg.run.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        r = cfg.recipe
        if (r.clustering, cfg.data.dataset) not in CONFIGS:
            raise ValueError(f"train: no clustering configuration {r.clustering!r} for {cfg.data.dataset!r}")
        for name, value, allowed in (("recipe", r.recipe, ("baseline", "mmm", "ecul")),
                                     ("mmlm_method", r.mmlm_method, ("greedy", "hungarian")),
                                     ("sca_distance", r.sca_distance, ("l1", "l2sq")),
                                     ("optimizer", cfg.optim.optimizer, ("adam", "sgd"))):
            if value not in allowed:
                raise ValueError(f"train: unknown {name} {value!r}; expected one of {', '.join(allowed)}")
        o, d = cfg.optim, cfg.data
        for name, value, low in (("optim.epochs", o.epochs, 0), ("optim.iters", o.iters, 1),
                                 ("optim.ids_per_batch", o.ids_per_batch, 1), ("optim.instances", o.instances, 1),
                                 ("optim.extract_batch", o.extract_batch, 1), ("optim.step_size", o.step_size, 1),
                                 ("data.height", d.height, 1), ("data.width", d.width, 1),
                                 ("data.eval_trials", d.eval_trials, 1)):
            if value < low:
                raise ValueError(f"train: {name} must be >= {low}, got {value}")
        for name, value in (("optim.lr", o.lr), ("recipe.temp", r.temp)):
            if not value > 0:
                raise ValueError(f"train: {name} must be > 0, got {value}")
        for name, value in (("recipe.tsmem_switch", r.tsmem_switch), ("recipe.cma_start", r.cma_start),
                            ("recipe.joint_start", r.joint_start)):
            if value is not None and value < 0:
                raise ValueError(f"train: {name} must be >= 0 (or unset), got {value}")
        if not r.recluster and r.joint_start is not None and r.joint_start > 0:
            raise ValueError(f"train: recluster=False with joint_start={r.joint_start} > 0 would never compute the "
                             "joint labels (labels are fixed at the first epoch); use joint_start=0 or recluster")
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        if cfg.run.deterministic:
            # cuBLAS refuses deterministic mode without a fixed workspace (before its first use)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        _seed_all(cfg.run.seed)
        self.train_set = train_set or load_train_set(cfg.data.dataset, cfg.data.data_root, cfg.data.height,
                                                     cfg.data.width, cfg.data.trial)
        self.eval_set = eval_set
        self.images = self.train_set.images.to(self.device)
        self.model: TwoStreamNet = build_model(cfg.model.arch, cfg.model.weights, cfg.model.non_local)
        self.model.to(self.device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and cfg.run.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.net: torch.nn.Module = self.model
        if self.world > 1:
            ids = [self.device.index] if self.cuda else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        params = [p for p in self.model.parameters() if p.requires_grad]
        o = cfg.optim
        if o.optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=o.lr, momentum=0.9, nesterov=True,
                                             weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, o.step_size, o.gamma)
        self.memories = torch.nn.ModuleDict()
        self.fixed_labels: Labels | None = None
        self._joint_labels: Tensor | None = None
        self.confidence: Tensor | None = None
        self.momentum = cfg.recipe.memory_momentum
        self.epoch = 0
        self.on_epoch = on_epoch
        self.out = cfg.run.output
        self.writer = None
        if self.rank == 0:
            os.makedirs(self.out, exist_ok=True)
            save_config(cfg, os.path.join(self.out, "config.json"))
            if cfg.run.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.writer = SummaryWriter(os.path.join(self.out, "tb"))
                except ImportError:
                    warnings.warn("train: tensorboard is not installed; --tensorboard ignored", stacklevel=2)
        if cfg.run.resume:
            self.load_checkpoint(os.path.join(self.out, "checkpoint.pt"))

    # -- phases ------------------------------------------------------------------------------------

    def _autocast(self):  # noqa: ANN202
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and self.cfg.run.amp)

    def extract(self, images: Tensor, is_ir: Tensor, flip: bool = True, renorm: bool = False,
                with_pooled: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """:func:`extract_features` with this run's device, batch, bf16 and DDP share."""
        return extract_features(self.model, images, is_ir, device=self.device, batch=self.cfg.optim.extract_batch,
                                flip=flip, renorm=renorm, amp=self.cfg.run.amp,
                                channels_last=self.cfg.run.channels_last, with_pooled=with_pooled)

    def _joint_active(self, epoch: int) -> bool:
        s = self.cfg.recipe.joint_start
        return s is not None and epoch >= s

    def cluster(self, feats: Tensor, epoch: int) -> tuple[Labels, dict]:
        """Pseudo-labels on rank 0, broadcast to every rank. Returns (labels, log entries)."""
        r, ts = self.cfg.recipe, self.train_set
        n = len(ts)
        info: dict = {}
        joint = self._joint_active(epoch)
        packed = torch.full((2 * n + 1,), -1, dtype=torch.int64, device=self.device)
        if self.rank == 0:
            if r.oracle_labels:
                if not bool((ts.pid >= 0).all()):
                    raise ValueError("train: oracle_labels needs ground-truth identities for every image")
                gt = torch.unique(ts.pid, return_inverse=True)[1].to(self.device)
                packed[:n] = gt
                packed[n : 2 * n] = gt
                packed[2 * n] = 1
            elif r.recluster or self.fixed_labels is None:
                from .cluster import ClusterConfig

                cc: ClusterConfig = CONFIGS[(r.clustering, self.cfg.data.dataset)]
                if r.eps is not None:
                    cc = dataclasses.replace(cc, eps=r.eps)
                if r.min_samples is not None:
                    cc = dataclasses.replace(cc, min_samples=r.min_samples)
                mod, cam = ts.modality.to(self.device), ts.camera.to(self.device)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    pl = pseudo_labels(feats, mod, cam, config=cc, joint=joint, select_joint=r.select_joint)
                info["warnings"] = [str(w.message) for w in caught]
                intra = torch.full((n,), -1, dtype=torch.int64, device=self.device)
                lv, lr = pl.visible, pl.infrared
                shared = False
                mmlm_on = r.mmlm and (r.mmlm_start is None or epoch >= r.mmlm_start)
                if mmlm_on and bool((lv >= 0).any()) and bool((lr >= 0).any()):
                    from .matching import mmlm

                    res = mmlm(feats[pl.visible_index], lv, feats[pl.infrared_index], lr, method=r.mmlm_method,
                               seed=self.cfg.run.seed)
                    lv, shared = res.vis_labels, True
                if shared and bool((ts.pid >= 0).all()):  # the clustering's own quality, before the transfer
                    info["ari_visible_clustering"] = ari(pl.visible, ts.pid[pl.visible_index.cpu()])
                intra[pl.visible_index], intra[pl.infrared_index] = lv, lr
                packed[:n] = intra
                if pl.joint is not None:
                    packed[n : 2 * n] = pl.joint
                packed[2 * n] = int(shared)
            else:
                packed[:n] = self.fixed_labels.intra
                if joint and self.fixed_labels.joint is not None:
                    packed[n : 2 * n] = self.fixed_labels.joint
                packed[2 * n] = int(self.fixed_labels.shared)
        _broadcast(packed)
        intra, jl, shared = packed[:n], packed[n : 2 * n], bool(packed[2 * n])
        labels = Labels(intra, jl if joint else None, shared)
        if not r.recluster and self.fixed_labels is None:
            self.fixed_labels = labels
        # Cluster counts and ARI (against ground truth where known).
        mod = ts.modality.to(self.device)
        gt = ts.pid.to(self.device)
        sets = {"visible": mod == VIS, "infrared": mod == IR}
        for name, m in sets.items():
            lab = intra[m]
            info[f"clusters_{name}"] = int(lab[lab >= 0].unique().numel())  # after MMLM ids are not 0..C-1
            info[f"outliers_{name}"] = int((lab < 0).sum())
        if labels.joint is not None:
            info["clusters_joint"] = int(labels.joint.unique().ge(0).sum())
        if bool((gt >= 0).all()):
            scores = {}
            for name, m in sets.items():
                scores[name] = ari(intra[m], gt[m])
            if "ari_visible_clustering" in info:  # MMLM: "visible" is the clustering's, before the transfer
                scores["visible_after_mmlm"] = scores["visible"]
                scores["visible"] = info.pop("ari_visible_clustering")
            if shared:
                scores["cross_modality"] = ari(intra, gt)
            if labels.joint is not None:
                scores["joint"] = ari(labels.joint, gt)
            info["ari"] = scores
        return labels, info

    def _momentum(self, epoch: int) -> float:
        r = self.cfg.recipe
        if r.tsmem_switch is None:
            return r.memory_momentum
        return TSMem(r.tsmem_switch, r.memory_momentum).momentum(epoch)

    @torch.no_grad()
    def build_memories(self, feats: Tensor, labels: Labels, epoch: int, pooled: Tensor | None = None) -> dict:
        """Memories of this epoch from the extracted features and labels (and, for SCA, MMM's prototypes
        from the pooled features); returns log entries."""
        r, ts = self.cfg.recipe, self.train_set
        mod = ts.modality.to(self.device)
        info: dict = {}
        mems = torch.nn.ModuleDict()
        masks = {"visible": mod == VIS, "infrared": mod == IR}
        c_shared = int(labels.intra.max()) + 1 if labels.shared else None
        for name, m in masks.items():
            lab = labels.intra[m]
            c = c_shared if c_shared is not None else int(lab.max()) + 1
            mems[name] = ClusterMemory.from_features(feats[m], lab, c, r.temp)
        self.confidence = None
        self.prototypes: dict[str, Tensor] = {}
        if r.sca:
            from .confidence import gmm_confidence

            conf = torch.ones(len(ts), device=self.device)
            for name, m in masks.items():
                lab = labels.intra[m]
                ok = lab >= 0
                loss = F.cross_entropy(F.normalize(feats[m][ok], dim=1) @ mems[name].features.t() / r.temp,
                                       lab[ok], reduction="none")
                if loss.numel() >= 2:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        part = gmm_confidence(loss, seed=self.cfg.run.seed)
                    sub = conf[m]
                    sub[ok] = part
                    conf[m] = sub
                # Prototypes, fixed for the epoch: confidence-weighted sums of the pooled features
                # divided by the count (MMM's code, so low-confidence identities shrink toward 0).
                self.prototypes[name] = segment_reduce(pooled[m], lab, mems[name].features.shape[0], conf[m],
                                                       "weighted_sum_by_count", normalize=False)
            self.confidence = conf
            info["confidence_mean"] = float(conf[labels.intra >= 0].mean()) if bool((labels.intra >= 0).any()) else 0.0
        if r.instance_memory:
            for name, m in masks.items():
                mems[f"{name}_instance"] = InstanceMemory(feats[m], labels.intra[m], r.temp)
        if r.cma_start is not None and epoch >= r.cma_start and not labels.shared:
            mv, mr = masks["visible"], masks["infrared"]
            matches = cross_modality_aggregate(feats[mv], labels.intra[mv], feats[mr], labels.intra[mr],
                                               mems["visible"].features, mems["infrared"].features)
            info["cma_pairs"] = len(matches)
        if labels.joint is not None and bool((labels.joint >= 0).any()):
            jl = labels.joint
            c = int(jl.max()) + 1
            # Joint memory: per joint cluster the mean of its visible mean and its infrared mean.
            means = [segment_reduce(feats[m], jl[m], c, None, "mean", normalize=True) for m in masks.values()]
            has = [torch.bincount(jl[m][jl[m] >= 0], minlength=c)[:, None] > 0 for m in masks.values()]
            both = (means[0] * has[0] + means[1] * has[1]) / (has[0].float() + has[1].float()).clamp(min=1)
            mem = ClusterMemory(c, feats.shape[1], r.temp).to(self.device)
            mem.features.copy_(F.normalize(both, dim=1))
            mems["joint"] = mem
            if r.instance_memory:
                mems["joint_instance"] = InstanceMemory(feats, jl, r.temp)
        self.memories = mems
        if self.world > 1:  # every rank built them; rank 0's copy wins, so no last-bit drift between ranks
            for t in [*mems.buffers(), *self.prototypes.values(),
                      *([self.confidence] if self.confidence is not None else [])]:
                dist.broadcast(t, 0)
        self.momentum = self._momentum(epoch)
        info["momentum"] = self.momentum
        return info

    def _samplers(self, labels: Labels) -> tuple[IdentitySampler, IdentitySampler, np.ndarray, np.ndarray]:
        ts = self.train_set
        iv = (ts.modality == VIS).nonzero().flatten().numpy()
        ir = (ts.modality == IR).nonzero().flatten().numpy()
        lab = labels.intra.cpu().numpy()
        cam = ts.camera.numpy()
        return IdentitySampler(lab[iv], cam[iv]), IdentitySampler(lab[ir], cam[ir]), iv, ir

    def train_epoch(self, labels: Labels, epoch: int) -> dict:
        """``iters`` iterations; returns the mean of each loss term and the images processed."""
        cfg, r = self.cfg, self.cfg.recipe
        p, k = cfg.optim.ids_per_batch, cfg.optim.instances
        sv, sr, iv, ir = self._samplers(labels)
        rng = np.random.default_rng([cfg.run.seed, self.rank, epoch])
        g = torch.Generator(device=self.device)
        g.manual_seed(int(rng.integers(2**62)))
        mems = self.memories
        joint = labels.joint
        intra = labels.intra
        sums: dict[str, Tensor] = {}  # summed on the device: no host sync per iteration
        offset_r = int(intra.max()) + 1  # infrared ids after the visible ones (separate label spaces)
        images = 0
        self.net.train()
        for _ in _progress(range(cfg.optim.iters), f"epoch {epoch}", cfg.run.progress and self.rank == 0):
            if labels.shared:
                bv, br = paired_batch(sv, sr, p, k, rng)
            else:
                bv, br = sv.batch(p, k, rng), sr.batch(p, k, rng)
            gv = torch.as_tensor(iv[bv], device=self.device)
            gr = torch.as_tensor(ir[br], device=self.device)
            imgs_v, imgs_r = self.images[gv.to(self.images.device)], self.images[gr.to(self.images.device)]
            # pad 10 px at the standard 288-pixel height; small demo images get the same relative shift
            pad = max(1, round(10 * cfg.data.height / 288))
            x = torch.cat([augment(imgs_v, g, pad=pad), augment(imgs_v, g, pad=pad, exchange=True),
                           augment(imgs_r, g, pad=pad, adaptive_gray=True)])
            if self.cuda and cfg.run.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            nv, nr = gv.numel(), gr.numel()
            is_ir = torch.cat([torch.zeros(2 * nv, dtype=torch.bool), torch.ones(nr, dtype=torch.bool)])
            with self._autocast():
                pooled, bn = self.net(x, is_ir.to(self.device))
            bn, pooled = bn.float(), pooled.float()
            yv, yr = intra[gv], intra[gr]
            yv2 = torch.cat([yv, yv])
            f_v, f_r = bn[: 2 * nv], bn[2 * nv :]
            terms: dict[str, Tensor] = {
                "nce_visible": mems["visible"](f_v, yv2),
                "nce_infrared": mems["infrared"](f_r, yr),
            }
            pos_v, pos_r = torch.as_tensor(bv, device=self.device), torch.as_tensor(br, device=self.device)
            if r.instance_memory:
                terms["ins_visible"] = r.instance_weight * mems["visible_instance"](f_v, torch.cat([pos_v, pos_v]))
                terms["ins_infrared"] = r.instance_weight * mems["infrared_instance"](f_r, pos_r)
            all_idx = torch.cat([gv, gv, gr])
            if joint is not None and "joint" in mems:
                jl = joint[all_idx]
                ok = jl >= 0
                if bool(ok.any()):
                    terms["nce_joint"] = r.joint_weight * mems["joint"](bn[ok], jl[ok])
                    if r.instance_memory:
                        terms["ins_joint"] = r.joint_weight * mems["joint_instance"](bn[ok], all_idx[ok])
            if r.sca and self.confidence is not None:
                # SCA on the GeM-pooled features (MMM's x_pool) against the epoch's fixed prototypes
                conf = self.confidence[all_idx]
                protos = self.prototypes
                intra_v = sca_intra(pooled[: 2 * nv], protos["visible"], yv2, conf[: 2 * nv], r.sca_distance)
                intra_r = sca_intra(pooled[2 * nv :], protos["infrared"], yr, conf[2 * nv :], r.sca_distance)
                terms["sca_intra"] = r.sca_intra_weight * (intra_v + intra_r)
                if labels.shared:
                    terms["sca_inter"] = r.sca_inter_weight * sca_inter(
                        pooled[:nv], pooled[nv : 2 * nv], pooled[2 * nv :], yv, yr)
            if r.triplet_weight > 0:
                y_all = torch.cat([yv2, yr]) if labels.shared else torch.cat([yv2, yr + offset_r])
                terms["triplet"] = r.triplet_weight * batch_hard_triplet(pooled, y_all)
            loss = sum(terms.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self._update_memories(bn.detach(), yv2, yr, pos_v, pos_r, all_idx, nv)
            for name, t in terms.items():
                sums[name] = sums[name] + t.detach() if name in sums else t.detach()
            images += x.shape[0]
        n_it = max(cfg.optim.iters, 1)
        return {"loss": {k: float(v) / n_it for k, v in sums.items()}, "images": images * self.world}

    @torch.no_grad()
    def _update_memories(self, bn: Tensor, yv2: Tensor, yr: Tensor, pos_v: Tensor, pos_r: Tensor,
                         all_idx: Tensor, nv: int) -> None:
        """Memory updates with every rank's batch (all-gathered), applied in rank order on every rank, so
        the memories stay equal across ranks. Each rank's block: 2·nv visible rows, then infrared rows."""
        meta = torch.stack([torch.cat([yv2, yr]), torch.cat([pos_v, pos_v, pos_r]), all_idx], 1)
        feats, meta = _all_gather_rows(bn), _all_gather_rows(meta)
        size, m, mems = bn.shape[0], self.momentum, self.memories
        for start in range(0, feats.shape[0], size):  # every rank draws the same batch shape
            f, (lab, pos, gidx) = feats[start : start + size], meta[start : start + size].unbind(1)
            v, r = slice(0, 2 * nv), slice(2 * nv, size)
            mems["visible"].update(f[v], lab[v], m)
            mems["infrared"].update(f[r], lab[r], m)
            if "visible_instance" in mems:
                mems["visible_instance"].update(f[v], pos[v], 0.0)
                mems["infrared_instance"].update(f[r], pos[r], 0.0)
            if "joint" in mems and self._joint_labels is not None:
                jl = self._joint_labels[gidx]
                ok = jl >= 0
                mems["joint"].update(f[ok], jl[ok], m)
                if "joint_instance" in mems:
                    mems["joint_instance"].update(f[ok], gidx[ok], 0.0)

    def evaluate(self) -> dict | None:
        """The test protocol on the held eval set (every rank extracts its share)."""
        if self.eval_set is None:
            return None
        return evaluate_on(self.eval_set, lambda x, ir: self.extract(x, ir, flip=self.cfg.data.test_flip))

    def probe(self, evaluate: bool = True) -> dict:
        """The current network as it stands: the ARI of the pseudo-labels its features give (the recipe's
        clustering at the current epoch) and, when ``evaluate``, the test protocol. Changes nothing."""
        t = time.perf_counter()
        feats = self.extract(self.images, self.train_set.modality == IR)
        fixed, self.fixed_labels = self.fixed_labels, None
        _, info = self.cluster(feats, self.epoch)
        self.fixed_labels = fixed
        out = {"ari": info.get("ari", {}), "clusters": {k: v for k, v in info.items() if k.startswith("clusters")},
               "time": {"extract+cluster": time.perf_counter() - t}}
        if evaluate:
            t = time.perf_counter()
            out["eval"] = self.evaluate()
            out["time"]["eval"] = time.perf_counter() - t
        return out

    # -- the loop ----------------------------------------------------------------------------------

    def run_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        rec: dict = {"epoch": epoch, "recipe": cfg.recipe.recipe, "time": {}}
        t = time.perf_counter()
        is_ir = self.train_set.modality == IR
        # SCA (MMM) also needs the pooled features, for its prototypes: same pass
        feats, pooled = (self.extract(self.images, is_ir, with_pooled=True) if cfg.recipe.sca
                         else (self.extract(self.images, is_ir), None))
        rec["time"]["extract"] = time.perf_counter() - t
        t = time.perf_counter()
        labels, info = self.cluster(feats, epoch)
        rec["time"]["cluster"] = time.perf_counter() - t
        rec.update(info)
        mod = self.train_set.modality.to(self.device)
        no_cluster = [n for n, m in (("visible", VIS), ("infrared", IR))
                      if not bool((labels.intra[mod == m] >= 0).any())]
        if no_cluster:
            rec["event"] = "no_cluster"
            rec["message"] = f"no cluster in the {' and '.join(no_cluster)} set; epoch {epoch} skips its iterations"
            logger.warning("train: %s", rec["message"])
            rec["time"]["memories"] = rec["time"]["train"] = 0.0
        else:
            t = time.perf_counter()
            self._joint_labels = labels.joint
            rec.update(self.build_memories(feats, labels, epoch, pooled))
            rec["time"]["memories"] = time.perf_counter() - t
            t = time.perf_counter()
            rec.update(self.train_epoch(labels, epoch))
            if self.world > 1:  # BN running statistics: rank 0's everywhere, so every rank extracts alike
                for b in self.model.buffers():
                    dist.broadcast(b, 0)
            if self.cuda:
                torch.cuda.synchronize()
            rec["time"]["train"] = time.perf_counter() - t
            rec["train_img_per_s"] = rec["images"] / max(rec["time"]["train"], 1e-9)
        with warnings.catch_warnings():  # an epoch without iterations still advances the schedule
            warnings.filterwarnings("ignore", message="Detected call of")
            self.scheduler.step()
        rec["lr"] = self.optimizer.param_groups[0]["lr"]
        last = epoch == cfg.optim.epochs - 1
        every = cfg.data.eval_every
        if self.eval_set is not None and (last or (every > 0 and (epoch + 1) % every == 0)):
            t = time.perf_counter()
            rec["eval"] = self.evaluate()
            rec["time"]["eval"] = time.perf_counter() - t
        return rec

    def fit(self) -> list[dict]:
        history = []
        for epoch in range(self.epoch, self.cfg.optim.epochs):
            rec = self.run_epoch(epoch)
            self.epoch = epoch + 1
            if self.rank == 0:
                self.save_checkpoint(os.path.join(self.out, "checkpoint.pt"))
                line = {k: v for k, v in rec.items() if k != "eval"}
                if "eval" in rec:
                    line["eval"] = {k: v for k, v in rec["eval"].items() if k != "cmc"}
                with open(os.path.join(self.out, "log.jsonl"), "a") as f:
                    f.write(json.dumps(rec) + "\n")
                logger.info("epoch %d: %s", epoch, _summary(line))
                if self.writer is not None:
                    self._tensorboard(rec)
            if self.on_epoch is not None:
                self.on_epoch(rec)
            history.append(rec)
        return history

    def _tensorboard(self, rec: dict) -> None:
        e = rec["epoch"]
        for k, v in rec.get("time", {}).items():
            self.writer.add_scalar(f"time/{k}", v, e)
        for k, v in rec.get("loss", {}).items():
            self.writer.add_scalar(f"loss/{k}", v, e)
        for k, v in (rec.get("eval") or {}).items():
            if k != "cmc":
                self.writer.add_scalar(f"eval/{k}", v, e)

    # -- checkpoints -------------------------------------------------------------------------------

    def state(self) -> dict:
        fixed = None
        if self.fixed_labels is not None:
            fixed = {"intra": self.fixed_labels.intra.cpu(), "shared": self.fixed_labels.shared,
                     "joint": None if self.fixed_labels.joint is None else self.fixed_labels.joint.cpu()}
        return {
            "epoch": self.epoch,
            "config": asdict(self.cfg),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "memories": {k: v.state_dict() for k, v in self.memories.items()},
            "memory_kinds": {k: type(v).__name__ for k, v in self.memories.items()},
            "fixed_labels": fixed,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if self.cuda else None},
        }

    def save_checkpoint(self, path: str) -> None:
        _atomic_save(self.state(), path)

    # How a run is executed, not what it computes: these may change between a run and its resume.
    _RESUMABLE_CHANGES = {("run", "resume"), ("run", "progress"), ("run", "tensorboard"), ("run", "threads"),
                          ("run", "device"), ("data", "data_root"), ("run", "output")}

    def _check_resumed_config(self, saved: dict, path: str) -> None:
        """A resumed run continues exactly only with the configuration it was started with."""
        now = dataclasses.asdict(self.cfg)
        changed = [f"{sec}.{key}: {saved[sec][key]!r} -> {value!r}"
                   for sec, fields_ in now.items() for key, value in fields_.items()
                   if (sec, key) not in self._RESUMABLE_CHANGES and sec in saved and key in saved[sec]
                   and saved[sec][key] != value]
        if changed:
            raise ValueError(f"train: --resume with a configuration that differs from the checkpoint's ({path}): "
                             + "; ".join(changed))

    def load_checkpoint(self, path: str) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"train: --resume but no checkpoint at {path}")
        try:
            # on the CPU: RNG states must stay CPU byte tensors; load_state_dict moves the rest
            st = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise ValueError(f"train: cannot read checkpoint {path}: {e}") from e
        self._check_resumed_config(st.get("config", {}), path)
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.epoch = int(st["epoch"])
        mems = torch.nn.ModuleDict()
        for k, sd in st["memories"].items():
            if st["memory_kinds"][k] == "ClusterMemory":
                m = ClusterMemory(*sd["features"].shape, self.cfg.recipe.temp)
            else:
                m = InstanceMemory(sd["slots"], torch.full((sd["slots"].shape[0],), -1), self.cfg.recipe.temp)
            m.load_state_dict(sd)
            mems[k] = m.to(self.device)
        self.memories = mems
        if st["fixed_labels"] is not None:
            fl = st["fixed_labels"]
            self.fixed_labels = Labels(fl["intra"].to(self.device),
                                       None if fl["joint"] is None else fl["joint"].to(self.device), fl["shared"])
        rng = st["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if self.cuda and rng["cuda"] is not None:
            torch.cuda.set_rng_state_all(rng["cuda"])
        logger.info("train: resumed from %s at epoch %d", path, self.epoch)


def _progress(it: range, desc: str, enabled: bool) -> range:
    """A tqdm bar over the iterations when enabled and tqdm is importable."""
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(it, desc=desc, leave=False)
        except ImportError:
            pass
    return it


def _summary(rec: dict) -> str:
    parts = [f"{k}={v:.1f}s" for k, v in rec.get("time", {}).items()]
    if "ari" in rec:
        parts.append("ARI(vis/ir, singletons)=" + "/".join(
            f"{rec['ari'][s]['outliers_singletons']:.3f}" for s in ("visible", "infrared")))
    if "loss" in rec:
        parts.append("loss=" + ",".join(f"{k}:{v:.3f}" for k, v in rec["loss"].items()))
    if "eval" in rec and rec["eval"]:
        e = rec["eval"]
        parts.append(f"R1={e['R1']:.4f} mAP={e['mAP']:.4f} mINP={e['mINP']:.4f}")
    if "event" in rec:
        parts.append(rec["message"])
    return " ".join(parts)


def init_distributed(device: str = "auto") -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): nccl when training on CUDA,
    gloo on CPU (``device`` is the run's configured device)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    backend = "nccl" if _resolve_device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend)
    return True


def train(cfg: Config, train_set: TrainSet | None = None, eval_set: EvalSet | None = None) -> Trainer:
    """Load data (unless given), build the trainer and run every epoch; returns the trainer."""
    started = init_distributed(cfg.run.device)
    try:
        if eval_set is None and cfg.data.data_root and (cfg.data.eval_every > 0 or cfg.optim.epochs > 0):
            d = cfg.data
            eval_set = load_eval_set(d.dataset, d.data_root, d.height, d.width, mode=d.eval_mode,
                                     trials=d.eval_trials, trial=d.trial)
        trainer = Trainer(cfg, train_set, eval_set)
        trainer.fit()
        return trainer
    finally:
        if started:
            dist.destroy_process_group()


def load_model(checkpoint: str, device: str = "cpu") -> tuple[TwoStreamNet, Config]:
    """The model of a checkpoint (``<output>/checkpoint.pt``) and its configuration."""
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"eval: checkpoint not found: {checkpoint}")
    st = torch.load(checkpoint, map_location=device, weights_only=False)
    cfg = config_from_dict(st["config"])
    model = build_model(cfg.model.arch, None, cfg.model.non_local)
    model.load_state_dict(st["model"])
    return model.to(device), cfg


__all__ += ["init_distributed", "load_model"]
