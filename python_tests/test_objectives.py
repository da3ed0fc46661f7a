"""The objectives' hooks on a tiny synthetic epoch: build (memories, statistics), loss per batch (named,
finite, with gradients reaching the model), update after the step (memories move), and the registry's
fixed order."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from uvireid_ext.cluster import Labels
from uvireid_ext.config import make_config
from uvireid_ext.modality import Modality
from uvireid_ext.objectives import OBJECTIVES, Batch, EpochState, Step, build_objectives

D = 8  # feature size
N_V = N_R = 8  # training images per modality


class Tiny(torch.nn.Module):
    """Stand-in network: (pooled, bn) of a [B, 6] input, both depending on every parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(6, D)
        self.neck = torch.nn.Linear(D, D)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.lin(x)
        return pooled, self.neck(pooled)


def epoch_inputs(shared: bool, seed: int = 0) -> tuple[EpochState, Labels]:
    """Four identities seen in both modalities (features near one centre each), infrared outliers."""
    g = torch.Generator().manual_seed(seed)
    vis = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    ir = torch.tensor([0, 0, 1, 1, 2, 2, -1, -1])
    centres = F.normalize(torch.randn(4, D, generator=g), dim=1)
    feats = torch.cat([centres[vis], centres[ir.clamp(min=0)]]) + 0.1 * torch.randn(N_V + N_R, D, generator=g)
    feats = F.normalize(feats, dim=1)
    # separate label spaces: infrared ids are their own numbering (here a permutation of the visible ones)
    ir_ids = ir if shared else torch.where(ir >= 0, (ir + 1) % 3, ir)
    labels = Labels(torch.cat([vis, ir_ids]), torch.cat([vis, ir]), shared)
    modality = torch.tensor([Modality.VISIBLE] * N_V + [Modality.INFRARED] * N_R)
    masks = {"visible": modality == Modality.VISIBLE, "infrared": modality == Modality.INFRARED}
    pooled = feats + 0.05 * torch.randn(N_V + N_R, D, generator=g)
    return EpochState(3, feats, pooled, labels, masks, torch.nn.ModuleDict(), 0.2), labels


def batch_of(model: Tiny, labels: Labels, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    pos_v, pos_r = torch.tensor([0, 2, 4, 6]), torch.tensor([0, 2, 4, 5])
    gv, gr = pos_v, N_V + pos_r
    nv = pos_v.numel()
    pooled, bn = model(torch.randn(2 * nv + pos_r.numel(), 6, generator=g))
    return Batch(bn, pooled, nv, labels.intra[gv], labels.intra[gr], pos_v, pos_r, torch.cat([gv, gv, gr]), labels)


def step_of(batch: Batch, momentum: float) -> Step:
    size = batch.bn.shape[0]
    return Step(batch.bn.detach() + 0.3, torch.cat([batch.yv2, batch.yr]),
                torch.cat([batch.pos_v, batch.pos_v, batch.pos_r]), batch.index, slice(0, 2 * batch.nv),
                slice(2 * batch.nv, size), momentum)


def objective(name: str):
    cfg = make_config("mmm" if name in ("sca", "triplet") else "ecul", 4)
    cfg.recipe.objectives = ["cluster_nce", "instance", "joint", "sca", "cma", "triplet"]
    cfg.recipe.cma_start = 0
    return OBJECTIVES[name](cfg)


def assert_gradients_reach(model: Tiny, terms: dict[str, torch.Tensor], pooled_only: bool = False) -> None:
    """Finite scalar terms whose backward reaches every parameter under the features they use (the
    pooled features stop before the neck)."""
    model.zero_grad()
    for name, t in terms.items():
        assert t.dim() == 0 and torch.isfinite(t), (name, t)
    sum(terms.values()).backward()
    for p in model.lin.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    for p in model.neck.parameters():
        assert (p.grad is None) if pooled_only else (p.grad is not None and p.grad.abs().sum() > 0)


def test_registry_order_is_fixed() -> None:
    assert list(OBJECTIVES) == ["cluster_nce", "instance", "joint", "sca", "cma", "triplet"]
    cfg = make_config("ecul", 4, {"recipe": {"objectives": ["triplet", "instance", "joint", "cluster_nce"]}})
    assert [o.name for o in build_objectives(cfg)] == ["cluster_nce", "instance", "joint", "triplet"]
    cfg.recipe.objectives = ["cluster_nce", "focal"]
    with pytest.raises(ValueError, match=r"unknown objective\(s\) \['focal'\]"):
        build_objectives(cfg)


@pytest.mark.parametrize("shared", [False, True])
def test_cluster_nce_builds_both_memories_and_updates_them(shared: bool) -> None:
    torch.manual_seed(0)
    state, labels = epoch_inputs(shared)
    obj = objective("cluster_nce")
    assert obj.build(state) == {}
    assert set(state.memories) == {"visible", "infrared"}
    assert state.memories["visible"].features.shape == (4, D)
    model = Tiny()
    batch = batch_of(model, labels)
    terms = obj.loss(batch)
    assert set(terms) == {"nce_visible", "nce_infrared"}
    assert_gradients_reach(model, terms)
    before = {k: m.features.clone() for k, m in state.memories.items()}
    obj.update(step_of(batch, 0.2))
    for k, m in state.memories.items():
        assert not torch.equal(before[k], m.features)
        norms = m.features.norm(dim=1)  # unit rows; an id the modality never saw (shared labels) stays 0
        assert (((norms - 1).abs() < 1e-5) | (norms == 0)).all()


def test_instance_slots_are_replaced_by_the_batch() -> None:
    torch.manual_seed(0)
    state, labels = epoch_inputs(False)
    obj = objective("instance")
    obj.build(state)
    assert state.memories["visible_instance"].slots.shape == (N_V, D)
    model = Tiny()
    batch = batch_of(model, labels)
    terms = obj.loss(batch)
    assert set(terms) == {"ins_visible", "ins_infrared"}
    assert_gradients_reach(model, terms)
    step = step_of(batch, 0.0)
    obj.update(step)
    slots = state.memories["infrared_instance"].slots
    torch.testing.assert_close(slots[batch.pos_r], F.normalize(step.features[step.infrared], dim=1))
    untouched = [i for i in range(N_R) if i not in batch.pos_r.tolist()]
    torch.testing.assert_close(slots[untouched], F.normalize(state.features[N_V:][untouched], dim=1))


def test_joint_is_inactive_without_joint_labels_and_trains_with_them() -> None:
    torch.manual_seed(0)
    state, labels = epoch_inputs(False)
    obj = objective("joint")
    model = Tiny()
    off = EpochState(state.epoch, state.features, None, Labels(labels.intra, None, False), state.masks,
                     torch.nn.ModuleDict(), state.momentum)
    obj.build(off)
    assert obj.loss(batch_of(model, off.labels)) == {} and "joint" not in off.memories
    obj.build(state)
    assert {"joint", "joint_instance"} <= set(state.memories)
    batch = batch_of(model, labels)
    terms = obj.loss(batch)
    assert set(terms) == {"nce_joint", "ins_joint"}
    assert_gradients_reach(model, terms)
    before = state.memories["joint"].features.clone()
    obj.update(step_of(batch, 0.2))
    assert not torch.equal(before, state.memories["joint"].features)


@pytest.mark.parametrize("shared", [False, True])
def test_sca_confidences_prototypes_and_terms(shared: bool) -> None:
    torch.manual_seed(0)
    state, labels = epoch_inputs(shared)
    objective("cluster_nce").build(state)  # SCA reads the cluster memories
    obj = objective("sca")
    assert obj.needs_pooled
    info = obj.build(state)
    assert 0 < info["confidence_mean"] <= 1
    assert obj.confidence.shape == (N_V + N_R,)
    assert obj.prototypes["visible"].shape == (4, D)
    model = Tiny()
    terms = obj.loss(batch_of(model, labels))
    assert set(terms) == ({"sca_intra", "sca_inter"} if shared else {"sca_intra"})
    assert_gradients_reach(model, terms, pooled_only=True)
    no_pooled = EpochState(state.epoch, state.features, None, labels, state.masks, state.memories, 0.2)
    with pytest.raises(ValueError, match="sca: the epoch state has no pooled features"):
        obj.build(no_pooled)


def test_cma_mixes_matched_memories_only_with_separate_label_spaces() -> None:
    torch.manual_seed(0)
    state, _ = epoch_inputs(False)
    objective("cluster_nce").build(state)
    before = state.memories["visible"].features.clone()
    info = objective("cma").build(state)
    assert info["cma_pairs"] > 0 and not torch.equal(before, state.memories["visible"].features)
    shared, _ = epoch_inputs(True)
    objective("cluster_nce").build(shared)
    before = shared.memories["visible"].features.clone()
    assert objective("cma").build(shared) == {}
    assert torch.equal(before, shared.memories["visible"].features)


@pytest.mark.parametrize("shared", [False, True])
def test_triplet_keeps_the_modalities_label_spaces_apart(shared: bool) -> None:
    torch.manual_seed(0)
    state, labels = epoch_inputs(shared)
    obj = objective("triplet")
    obj.build(state)
    assert obj.offset_r == int(labels.intra.max()) + 1
    model = Tiny()
    terms = obj.loss(batch_of(model, labels))
    assert set(terms) == {"triplet"}
    assert_gradients_reach(model, terms, pooled_only=True)
