"""The one training loop of every recipe; a recipe is a list of objectives (``uvireid_ext.objectives``)
plus settings (``uvireid_ext.config``, presets in ``uvireid_ext/configs``).

One epoch (docs/architecture.md, "One training epoch")::

    extract   flip-averaged L2-normalised BN features of every training image (each DDP rank its share,
              all-gathered)
    cluster   pseudo-labels (rank 0, broadcast): visible, infrared, joint; MMLM label transfer;
              ARI against the ground truth when it is known (``uvireid_ext.cluster``)
    build     each objective's build hook: memories (cluster, instance, joint), SCA confidences and
              prototypes, cross-modality aggregation
    train     ``iters`` iterations: P ids × K images per modality (two visible views), the objectives'
              loss terms, one optimiser step (gradients averaged over DDP ranks), the objectives' memory
              updates with the all-gathered batch
    evaluate  SYSU-MM01 / RegDB protocol (every ``eval_every`` epochs and after the last)

Every epoch atomically replaces ``<output>/checkpoint.pt``, then appends one JSON line to
``<output>/log.jsonl`` (time of each phase, ARI, cluster counts, losses, metrics); ``resume`` continues from
the checkpoint with the same model, optimiser, scheduler, memories, RNG states and epoch. The per-epoch
random streams (batch sampling, augmentation) are derived from (seed, rank, epoch), so a resumed run draws
exactly what an uninterrupted one would, bit for bit on the same thread count, device and world size (a
resume on another one goes on, with a warning that it is no longer bit-exact: float reductions depend on
all three, and another world size draws other batches). An
epoch whose clustering finds no cluster is logged (``"event": "no_cluster"``), skips its iterations, and
the run goes on.

The log follows the checkpoint: the checkpoint keeps every log line of its epochs, and the log is made to
hold exactly those lines on resume (lines of epochs the checkpoint does not have, or a torn last line, are
dropped; a line the checkpoint has but the log lacks, after a kill between the two writes, is restored)
and at a new run's first epoch (an earlier run's lines in the folder go). So after any kill and resume
the log equals an uninterrupted run's, apart from the timing fields of the epochs run again. A kill inside
an atomic write leaves ``checkpoint.pt.tmp.<pid>`` (or ``log.jsonl.tmp.<pid>``); every start removes
those of writers that are no longer alive, and logs it.
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

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .checkpoint import (
    atomic_save,
    check_resumed_config,
    execution,
    execution_changes,
    extend_schedule,
    labels_from_state,
    labels_state,
    load_model,
    memories_from_state,
    memories_state,
    read_checkpoint,
    reconcile_log,
    remove_stale_temporaries,
    restore_rng,
    rng_state,
)
from .cluster import CONFIGS, Labels, label_stats, oracle_labels, recipe_labels
from .config import Config, save_config, validate
from .data.samplers import IdentitySampler, paired_batch
from .data.sets import EvalSet, TrainSet, load_eval_set, load_train_set
from .data.transforms import augment, crop_pad
from .distributed import all_gather_rows, broadcast, init_distributed, rank_world, resolve_device
from .features import extract_features
from .memory import memory_momentum
from .metrics import modality_mixing
from .modality import Modality
from .model import TwoStreamNet, build_model
from .objectives import Batch, EpochState, Step, build_objectives
from .progress import progress
from .protocol import run_protocol

__all__ = [
    "EvalSet",
    "TrainSet",
    "Trainer",
    "extract_features",
    "init_distributed",
    "load_eval_set",
    "load_model",
    "load_train_set",
    "run_protocol",
    "train",
]

logger = logging.getLogger(__name__)
VIS, IR = Modality.VISIBLE, Modality.INFRARED


class Trainer:
    """Holds the model, optimiser, objectives, data and run state; :meth:`fit` runs the epochs."""

    def __init__(self, cfg: Config, train_set: TrainSet | None = None, eval_set: EvalSet | None = None,
                 *, on_epoch: Callable[[dict], None] | None = None) -> None:
        validate(cfg)
        self.rank, self.world = rank_world()
        # everything that can be refused is checked before the data set loads (minutes on SYSU-MM01)
        self.device = resolve_device(cfg.run.device)
        resume = self._read_resume(cfg) if cfg.run.resume else None
        if resume is not None:
            cfg = resume[1]
        self.cfg = cfg
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        if cfg.run.deterministic:
            # cuBLAS refuses deterministic mode without a fixed workspace (before its first use)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        random.seed(cfg.run.seed)
        np.random.seed(cfg.run.seed)
        torch.manual_seed(cfg.run.seed)
        self.model: TwoStreamNet = build_model(cfg.model.arch, cfg.model.weights, cfg.model.non_local)
        if cfg.model.arch == "resnet50" and not cfg.model.weights and resume is None:
            warnings.warn("train: ResNet-50 without --weights starts from random initialisation; the methods "
                          "start from torchvision's ImageNet file resnet50-19c8e357.pth (read from a local path, "
                          "never downloaded; README, Training and evaluation)", stacklevel=2)
        d = cfg.data
        if train_set is None:
            t = time.perf_counter()
            logger.info("train: loading the %s training set from %s at %d×%d ...", d.dataset, d.data_root,
                        d.height, d.width)
            train_set = load_train_set(d.dataset, d.data_root, d.height, d.width, d.trial)
            logger.info("train: %d training images (%d visible, %d infrared) in %.1f s", len(train_set),
                        int((train_set.modality == VIS).sum()), int((train_set.modality == IR).sum()),
                        time.perf_counter() - t)
        self.train_set = train_set
        self.eval_set = eval_set
        self.images = self.train_set.images.to(self.device)
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
        self.objectives = build_objectives(cfg)
        self.memories = torch.nn.ModuleDict()
        self.fixed_labels: Labels | None = None
        self.momentum = cfg.recipe.memory_momentum
        self.epoch = 0
        self.log_lines: list[str] = []  # one JSON line per epoch done, kept in the checkpoint too
        self._log_in_step = False  # whether log.jsonl holds exactly log_lines (reconcile_log)
        self.on_epoch = on_epoch
        self.out = cfg.run.output
        self.writer = None
        if self.rank == 0:
            os.makedirs(self.out, exist_ok=True)
            self._remove_stale_temporaries()
            save_config(cfg, os.path.join(self.out, "config.json"))
            if cfg.run.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.writer = SummaryWriter(os.path.join(self.out, "tb"))
                except ImportError:
                    warnings.warn("train: tensorboard is not installed; --tensorboard ignored", stacklevel=2)
        if resume is not None:
            self.load_state(*resume)

    # -- phases ------------------------------------------------------------------------------------

    def extract(self, images: Tensor, is_ir: Tensor, flip: bool = True, renorm: bool = False,
                with_pooled: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """:func:`extract_features` with this run's device, batch, bf16 and DDP share."""
        return extract_features(self.model, images, is_ir, device=self.device, batch=self.cfg.optim.extract_batch,
                                flip=flip, renorm=renorm, amp=self.cfg.run.amp,
                                channels_last=self.cfg.run.channels_last, with_pooled=with_pooled)

    def _joint_active(self, epoch: int) -> bool:
        r = self.cfg.recipe
        return "joint" in r.objectives and epoch >= r.joint_start

    def cluster(self, feats: Tensor, epoch: int) -> tuple[Labels, dict]:
        """Pseudo-labels on rank 0, broadcast to every rank. Returns (labels, log entries)."""
        r, ts = self.cfg.recipe, self.train_set
        n = len(ts)
        info: dict = {}
        joint = self._joint_active(epoch)
        packed = torch.full((2 * n + 1,), -1, dtype=torch.int64, device=self.device)
        if self.rank == 0:
            if r.oracle_labels:
                labels = oracle_labels(ts.pid, self.device)
            elif r.recluster or self.fixed_labels is None:
                cc = CONFIGS[(r.clustering, self.cfg.data.dataset)]
                if r.eps is not None:
                    cc = dataclasses.replace(cc, eps=r.eps)
                if r.min_samples is not None:
                    cc = dataclasses.replace(cc, min_samples=r.min_samples)
                mmlm_on = r.mmlm and (r.mmlm_start is None or epoch >= r.mmlm_start)
                labels, info = recipe_labels(feats, ts.modality.to(self.device), ts.camera.to(self.device), ts.pid,
                                             cc, joint=joint, select_joint=r.select_joint,
                                             mmlm_method=r.mmlm_method if mmlm_on else None, seed=self.cfg.run.seed)
            else:
                labels = self.fixed_labels
            packed[:n] = labels.intra
            if joint and labels.joint is not None:
                packed[n : 2 * n] = labels.joint
            packed[2 * n] = int(labels.shared)
        broadcast(packed)
        labels = Labels(packed[:n], packed[n : 2 * n] if joint else None, bool(packed[2 * n]))
        if not r.recluster and self.fixed_labels is None:
            self.fixed_labels = labels
        return labels, label_stats(labels, ts.modality.to(self.device), ts.pid.to(self.device), info)

    @torch.no_grad()
    def build_memories(self, feats: Tensor, labels: Labels, epoch: int, pooled: Tensor | None = None) -> dict:
        """Every objective's build hook on this epoch's features and labels; returns log entries."""
        r = self.cfg.recipe
        mod = self.train_set.modality.to(self.device)
        self.memories = torch.nn.ModuleDict()
        self.momentum = memory_momentum(r.memory_momentum, r.tsmem_switch, epoch)
        state = EpochState(epoch, feats, pooled, labels, {"visible": mod == VIS, "infrared": mod == IR},
                           self.memories, self.momentum,
                           self.train_set.pid.to(self.device) if bool((self.train_set.pid >= 0).all()) else None)
        info: dict = {}
        for obj in self.objectives:
            info.update(obj.build(state))
        if self.world > 1:  # every rank built them; rank 0's copy wins, so no last-bit drift between ranks
            for t in [*self.memories.buffers(), *(t for o in self.objectives for t in o.shared_tensors())]:
                dist.broadcast(t, 0)
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
        cfg = self.cfg
        p, k = cfg.optim.ids_per_batch, cfg.optim.instances
        sv, sr, iv, ir = self._samplers(labels)
        rng = np.random.default_rng([cfg.run.seed, self.rank, epoch])
        g = torch.Generator(device=self.device)
        g.manual_seed(int(rng.integers(2**62)))
        intra = labels.intra
        sums: dict[str, Tensor] = {}  # summed on the device: no host sync per iteration
        images = 0
        pad = crop_pad(cfg.data.height)
        self.net.train()
        desc = f"{cfg.recipe.recipe} epoch {epoch + 1}/{cfg.optim.epochs}"
        for _ in progress(range(cfg.optim.iters), desc, cfg.run.progress and self.rank == 0):
            if labels.shared:
                bv, br = paired_batch(sv, sr, p, k, rng)
            else:
                bv, br = sv.batch(p, k, rng), sr.batch(p, k, rng)
            gv = torch.as_tensor(iv[bv], device=self.device)
            gr = torch.as_tensor(ir[br], device=self.device)
            imgs_v, imgs_r = self.images[gv.to(self.images.device)], self.images[gr.to(self.images.device)]
            x = torch.cat([augment(imgs_v, g, pad=pad), augment(imgs_v, g, pad=pad, exchange=True),
                           augment(imgs_r, g, pad=pad, adaptive_gray=True)])
            if self.cuda and cfg.run.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            nv, nr = gv.numel(), gr.numel()
            is_ir = torch.cat([torch.zeros(2 * nv, dtype=torch.bool), torch.ones(nr, dtype=torch.bool)])
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and cfg.run.amp):
                pooled, bn = self.net(x, is_ir.to(self.device))
            pos_v, pos_r = torch.as_tensor(bv, device=self.device), torch.as_tensor(br, device=self.device)
            batch = Batch(bn.float(), pooled.float(), nv, intra[gv], intra[gr], pos_v, pos_r,
                          torch.cat([gv, gv, gr]), labels)
            terms: dict[str, Tensor] = {}
            for obj in self.objectives:
                terms.update(obj.loss(batch))
            loss = sum(terms.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self._update_memories(batch)
            for name, t in terms.items():
                sums[name] = sums[name] + t.detach() if name in sums else t.detach()
            images += x.shape[0]
        n_it = max(cfg.optim.iters, 1)
        return {"loss": {k: float(v) / n_it for k, v in sums.items()}, "images": images * self.world}

    @torch.no_grad()
    def _update_memories(self, b: Batch) -> None:
        """The objectives' updates with every rank's batch (all-gathered), applied in rank order on every
        rank, so the memories stay equal across ranks. Each rank's block: 2·nv visible rows, then infrared."""
        meta = torch.stack([torch.cat([b.yv2, b.yr]), torch.cat([b.pos_v, b.pos_v, b.pos_r]), b.index], 1)
        feats, meta = all_gather_rows(b.bn.detach()), all_gather_rows(meta)
        size = b.bn.shape[0]
        for start in range(0, feats.shape[0], size):  # every rank draws the same batch shape
            lab, pos, gidx = meta[start : start + size].unbind(1)
            step = Step(feats[start : start + size], lab, pos, gidx, slice(0, 2 * b.nv), slice(2 * b.nv, size),
                        self.momentum)
            for obj in self.objectives:
                obj.update(step)

    def evaluate(self) -> dict | None:
        """The test protocol on the held eval set (every rank extracts its share)."""
        if self.eval_set is None:
            return None
        return run_protocol(self.eval_set, lambda x, ir: self.extract(x, ir, flip=self.cfg.data.test_flip)).summary()

    def probe(self, evaluate: bool = True, mixing: bool = False) -> dict:
        """The current network as it stands: the ARI of the pseudo-labels its features give (the recipe's
        clustering at the current epoch), when ``mixing`` how far its training features mix the modalities
        (:func:`~uvireid_ext.metrics.modality_mixing`, on the ground-truth identities), and when ``evaluate``
        the test protocol. Changes nothing."""
        t = time.perf_counter()
        is_ir = self.train_set.modality == IR
        feats = self.extract(self.images, is_ir)
        fixed, self.fixed_labels = self.fixed_labels, None
        _, info = self.cluster(feats, self.epoch)
        self.fixed_labels = fixed
        out = {"ari": info.get("ari", {}), "clusters": {k: v for k, v in info.items() if k.startswith("clusters")},
               "time": {"extract+cluster": time.perf_counter() - t}}
        if mixing:
            out["mixing"] = modality_mixing(feats, is_ir, self.train_set.pid)
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
        # objectives that need the pooled features (SCA's prototypes) get them from the same pass
        if any(o.needs_pooled for o in self.objectives):
            feats, pooled = self.extract(self.images, is_ir, with_pooled=True)
        else:
            feats, pooled = self.extract(self.images, is_ir), None
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
            self.log_lines.append(json.dumps(rec))
            if self.rank == 0:
                # the checkpoint keeps this line: a kill before the log append below loses nothing
                self.save_checkpoint(os.path.join(self.out, "checkpoint.pt"))
                self._write_log()
                line = {k: v for k, v in rec.items() if k != "eval"}
                if "eval" in rec:
                    line["eval"] = {k: v for k, v in rec["eval"].items() if k != "cmc"}
                logger.info("%s epoch %d/%d: %s", self.cfg.recipe.recipe, epoch + 1, self.cfg.optim.epochs,
                            _summary(line))
                if self.writer is not None:
                    self._tensorboard(rec)
            if self.on_epoch is not None:
                self.on_epoch(rec)
            history.append(rec)
        return history

    def _write_log(self) -> None:
        """Append the last line to log.jsonl; at a new run's first epoch, first make the file hold exactly the
        earlier lines (none: an earlier run's log in the folder goes)."""
        path = os.path.join(self.out, "log.jsonl")
        if not self._log_in_step:
            _, change = reconcile_log(path, self.log_lines[:-1], self.epoch - 1)
            if change:
                logger.warning("train: %s", change)
            self._log_in_step = True
        with open(path, "a") as f:
            f.write(self.log_lines[-1] + "\n")

    def _tensorboard(self, rec: dict) -> None:
        e = rec["epoch"]
        for k, v in rec.get("time", {}).items():
            self.writer.add_scalar(f"time/{k}", v, e)
        for k, v in rec.get("loss", {}).items():
            self.writer.add_scalar(f"loss/{k}", v, e)
        for k, v in (rec.get("eval") or {}).items():
            if k != "cmc":
                self.writer.add_scalar(f"eval/{k}", v, e)

    # -- checkpoints (uvireid_ext.checkpoint) --------------------------------------------------------

    def state(self) -> dict:
        return {"epoch": self.epoch, "config": dataclasses.asdict(self.cfg), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                **memories_state(self.memories), "fixed_labels": labels_state(self.fixed_labels),
                "rng": rng_state(self.cuda), "log": list(self.log_lines),
                "execution": execution(torch.get_num_threads(), self.device, self.world)}

    def _remove_stale_temporaries(self) -> None:
        """A writer killed inside an atomic write leaves ``<file>.tmp.<pid>`` in the run folder: remove those
        of dead writers, and say which ones a live process other than this one may still be writing."""
        removed, kept = remove_stale_temporaries(self.out, ("checkpoint.pt", "log.jsonl"))
        if removed:
            logger.warning("train: removed %d temporary file(s) of a writer killed while saving: %s", len(removed),
                           ", ".join(removed))
        for path in kept:
            logger.warning("train: left %s: its process is alive (another run writing into %s?)", path, self.out)

    def save_checkpoint(self, path: str) -> None:
        atomic_save(self.state(), path)

    @staticmethod
    def _read_resume(cfg: Config) -> tuple[dict, Config, str]:
        """The checkpoint to resume from, and the configuration to resume with (``extend_schedule``)."""
        path = os.path.join(cfg.run.output, "checkpoint.pt")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"train: --resume but no checkpoint at {path}")
        st = read_checkpoint(path)
        cfg, kept = extend_schedule(cfg, st["config"], int(st["epoch"]), path)
        check_resumed_config(cfg, st["config"], path)
        if cfg.optim.epochs != st["config"]["optim"]["epochs"]:
            logger.info("train: the run changes from %d to %d epochs; stages stay at the epochs it started with%s; "
                        "the learning rate keeps its StepLR schedule (× gamma every step_size epochs)",
                        st["config"]["optim"]["epochs"], cfg.optim.epochs, f" ({', '.join(kept)})" if kept else "")
        return st, cfg, path

    def load_state(self, st: dict, cfg: Config, path: str) -> None:
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.epoch = int(st["epoch"])
        self.memories = memories_from_state(st, cfg.recipe.temp, self.device)
        self.fixed_labels = labels_from_state(st["fixed_labels"], self.device)
        restore_rng(st["rng"], self.cuda)
        # a checkpoint from before the execution entry: its configured thread count, when one was set
        changes = execution_changes(st.get("execution", {"threads": st["config"]["run"].get("threads")}),
                                    execution(torch.get_num_threads(), self.device, self.world))
        if changes:
            batches = (" and each rank draws its own batches (another world size: other batches, another global "
                       "batch size)" if any(c.startswith("world_size") for c in changes) else "")
            warnings.warn(f"train: resuming {path} with {'; '.join(changes)} (checkpoint -> now): float reductions "
                          f"depend on the CPU thread count, the device and the world size{batches}, so the "
                          "continuation is no longer bit-exact with an uninterrupted run (for that, resume with the "
                          "checkpoint's --threads, device and number of processes)", stacklevel=3)
        self.log_lines = list(st["log"]) if "log" in st else []
        if self.rank == 0:
            self.log_lines, change = reconcile_log(os.path.join(self.out, "log.jsonl"), st.get("log"), self.epoch)
            self._log_in_step = True
            if change:
                logger.warning("train: %s", change)
        logger.info("train: resumed from %s at epoch %d of %d", path, self.epoch, cfg.optim.epochs)


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


def train(cfg: Config, train_set: TrainSet | None = None, eval_set: EvalSet | None = None) -> Trainer:
    """Load data (unless given), build the trainer and run every epoch; returns the trainer."""
    started = init_distributed(cfg.run.device)
    try:
        trainer = Trainer(cfg, train_set, eval_set)
        cfg = trainer.cfg
        if eval_set is None and cfg.data.data_root and (cfg.data.eval_every > 0 or cfg.optim.epochs > 0):
            d, t = cfg.data, time.perf_counter()
            trainer.eval_set = load_eval_set(d.dataset, d.data_root, d.height, d.width, mode=d.eval_mode,
                                             trials=d.eval_trials, trial=d.trial)
            logger.info("train: %d test queries, %d gallery trial(s) in %.1f s", len(trainer.eval_set.q_pid),
                        len(trainer.eval_set.galleries), time.perf_counter() - t)
        trainer.fit()
        return trainer
    finally:
        if started:
            dist.destroy_process_group()
