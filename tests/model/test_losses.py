"""L_HC (late-interaction InfoNCE), L_CS and L_LM on hand-made embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

from hwsi_model.model.configuration import LossConfig
from hwsi_model.model.hierarchy import UnitEmbeddings
from hwsi_model.model.losses import (
    HierarchicalContrastiveLoss,
    causal_lm_loss,
    combine_losses,
    cross_scale_consistency,
    gather_units,
    late_interaction_scores,
)


def units(x: torch.Tensor, mask: torch.Tensor | None = None) -> UnitEmbeddings:
    x = F.normalize(x, dim=-1)
    return UnitEmbeddings(x, torch.ones(x.shape[:2], dtype=torch.bool) if mask is None else mask)


def test_late_interaction_matches_a_manual_loop() -> None:
    g = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(3, 5, 8, generator=g), dim=-1)
    t = F.normalize(torch.randn(3, 4, 8, generator=g), dim=-1)
    vm = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    tm = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    for topk in (1, 2):
        got = late_interaction_scores(v, vm, t, tm, topk)
        for i in range(3):
            for j in range(3):
                sims = t[j][tm[j]] @ v[i][vm[i]].T  # [T_j, U_i]
                k = min(topk, sims.shape[1])
                want = sims.topk(k, dim=1).values.mean(1).mean()
                torch.testing.assert_close(got[i, j], want)
        # Chunked over slides (bounded memory): the same scores.
        chunked = late_interaction_scores(v, vm, t, tm, topk, max_elements=3 * 4 * 5)
        torch.testing.assert_close(chunked, got)


def test_info_nce_is_near_zero_for_perfect_pairs_and_high_for_shuffled() -> None:
    loss = HierarchicalContrastiveLoss(LossConfig(init_temperature=0.01))  # logit scale 100
    eye = torch.eye(8)
    # 4 slides with orthogonal embeddings; each slide has 2 regions, e_i and e_(4+i).
    visual = {
        "wsi": units(eye[:4, None]),
        "region": units(torch.stack([eye[:4], eye[4:]], dim=1)),
    }
    text = {"wsi": units(eye[:4, None]), "region": units(eye[4:, None])}
    _, parts = loss(visual, text)
    # cos 1 against 0: near zero; the sentence finds its best region (the second one).
    assert parts["wsi"] < 1e-6 and parts["region"] < 1e-6
    shuffled = {s: UnitEmbeddings(u.emb.roll(1, 0), u.mask) for s, u in text.items()}
    _, parts = loss(visual, shuffled)
    assert parts["wsi"] > 50.0 and parts["region"] > 50.0


def test_info_nce_noisy_matched_below_shuffled() -> None:
    g = torch.Generator().manual_seed(1)
    loss = HierarchicalContrastiveLoss(LossConfig())
    base = torch.randn(6, 5, 16, generator=g)
    visual = {"patch": units(base + 0.3 * torch.randn(6, 5, 16, generator=g))}
    text = {"patch": units(base[:, :3])}
    matched, _ = loss(visual, text)
    shuffled, _ = loss(
        visual, {"patch": UnitEmbeddings(text["patch"].emb[[1, 2, 3, 4, 5, 0]], text["patch"].mask)}
    )
    assert matched < 0.5 * shuffled


def test_scale_without_text_is_skipped_and_temperature_is_learnable() -> None:
    loss = HierarchicalContrastiveLoss(LossConfig())
    v = units(torch.randn(3, 2, 8))
    t = units(torch.randn(3, 2, 8), torch.zeros(3, 2, dtype=torch.bool))
    total, parts = loss({"cell": v}, {"cell": t})
    assert parts == {} and float(total.detach()) == 0.0
    total, parts = loss({"cell": v}, {"cell": units(torch.randn(3, 2, 8))})
    total.backward()
    grad = loss.log_logit_scale.grad
    assert grad is not None and grad[0] != 0 and bool((grad[1:] == 0).all())
    assert torch.isclose(loss.logit_scale("cell"), torch.tensor(1 / 0.07))


def test_cross_scale_consistency() -> None:
    x = units(torch.randn(3, 1, 8))
    same = {"cell": x, "patch": x, "region": x, "wsi": x}
    assert float(cross_scale_consistency(same)) < 1e-6
    opposite = UnitEmbeddings(-x.emb, x.mask)
    assert torch.isclose(cross_scale_consistency({"region": x, "wsi": opposite}), torch.tensor(2.0))
    # The summary is the mean of the real units only.
    u = torch.zeros(1, 3, 8)
    u[0, 0, 0] = 1.0
    u[0, 1, 1] = 1.0
    u[0, 2] = -5.0  # padding
    mask = torch.tensor([[True, True, False]])
    wsi = units(torch.tensor([[[1.0, 1.0] + [0.0] * 6]]))
    got = cross_scale_consistency({"region": UnitEmbeddings(u, mask), "wsi": wsi})
    assert float(got) < 1e-6


def test_lm_loss_counts_only_labelled_positions() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=g)
    labels = torch.full((2, 6), -100)
    labels[0, 3:5] = torch.tensor([4, 7])
    labels[1, 5] = 2
    want = []
    for b, t in [(0, 3), (0, 4), (1, 5)]:
        want.append(-torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]])
    torch.testing.assert_close(causal_lm_loss(logits, labels), torch.stack(want).mean())
    # Changing logits at unlabelled positions does not change the loss.
    logits2 = logits.clone()
    logits2[0, :2] = 50.0
    logits2[1, :4] = -50.0
    torch.testing.assert_close(causal_lm_loss(logits2, labels), causal_lm_loss(logits, labels))


def test_combine_losses_weights() -> None:
    cfg = LossConfig(lm_weight=0.25, hc_weight=0.7, cs_weight=2.0)
    got = combine_losses(cfg, lm=torch.tensor(4.0), hc=torch.tensor(1.0), cs=torch.tensor(0.5))
    assert abs(float(got) - (0.25 * 4 + 0.7 + 1.0)) < 1e-6
    assert abs(float(combine_losses(cfg, hc=torch.tensor(1.0))) - 0.7) < 1e-6


def test_gather_is_identity_without_distributed() -> None:
    x, m = torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool)
    gx, gm = gather_units(x, m)
    assert gx is x and gm is m
