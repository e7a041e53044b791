"""The FoldingNet objective's explicit weighting: the ``recon`` readings, ``aug_target``, the
gradient-norm diagnostics, and the small augmentation recipe (issue 14).

Hand computations use dense float64 NumPy distances on the tensors the model produced for a fixed
batch (the same generator draws as :func:`compute_terms`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crfold.config import TrainConfig, load_config
from crfold.io import load_checkpoint
from crfold.train import train
from crfold.train.foldingnet import (
    build_model,
    build_transform,
    compute_terms,
    shard_loader,
    training_splits,
    validate,
)
from crfold.train.runtime import DistInfo, read_metrics, step_generator
from crfold.transforms import RandomRotation

CPU = torch.device("cpu")


def _gen(step: int = 3) -> torch.Generator:
    return step_generator(0, 0, step, CPU)


def _setup(tiny_overrides, *more: str):
    cfg = load_config(overrides=[*tiny_overrides, "amp=none", *more])
    torch.manual_seed(0)
    model = build_model(cfg)
    x = torch.randn(4, 64, 3, generator=torch.Generator().manual_seed(1))
    return cfg, model, x, build_transform(cfg, "y")


def _forward(model, x, cfg, t):
    """The inputs and outputs of compute_terms' forward, redrawn with the same generator."""
    gen = _gen()
    inp = torch.cat([x, t(x, generator=gen)]) if cfg.mode in ("aug", "cr") else x
    with torch.no_grad():
        out = model(inp, generator=gen)
    return inp, out


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _hand_recon(recon: np.ndarray, target: np.ndarray, reading: str, obs_scale: float) -> float:
    """One cloud: the Gaussian Chamfer NLL or FoldingNet's mean Chamfer, densely."""
    d = ((recon[:, None, :] - target[None, :, :]) ** 2).sum(-1)  # (M, N)
    if reading == "gaussian":
        return (d.min(1).sum() + d.min(0).sum()) / (2 * obs_scale**2)
    return d.min(1).mean() + d.min(0).mean()


def _hand_kl(mu: np.ndarray, lv: np.ndarray) -> float:
    return 0.5 * (np.exp(lv) + mu**2 - 1 - lv).sum()


def _hand_consistency(mu_t, lv_t, mu_x, lv_x) -> float:
    """KL(q(z|t(x)) || q(z|x)) of one pair."""
    return 0.5 * (lv_x - lv_t + (np.exp(lv_t) + (mu_t - mu_x) ** 2) / np.exp(lv_x) - 1).sum()


# --------------------------------------------------------------------------- the readings
@pytest.mark.parametrize("reading", ["gaussian", "mean_chamfer"])
@pytest.mark.parametrize("mode", ["ae", "base", "cr"])
def test_loss_terms_equal_a_hand_computation(tiny_overrides, reading, mode):
    beta, lam = (1e-3, 0.1) if reading == "mean_chamfer" else (2.0, 0.5)
    cfg, model, x, t = _setup(
        tiny_overrides, f"mode={mode}", f"recon={reading}", f"beta={beta}", f"lam={lam}"
    )
    model.mode = {"ae": "ae", "base": "vae", "cr": "cr"}[mode]
    if mode == "cr":  # posteriors far enough apart that R is not float32 round-off
        with torch.no_grad():
            model.encoder.mu.weight.mul_(30)
            model.encoder.logvar.weight.mul_(30)
    terms = compute_terms(model, x, cfg, t, _gen())
    inp, out = _forward(model, x, cfg, t)
    r, mu, lv, inp = _np(out.recon), _np(out.posterior.mu), _np(out.posterior.logvar), _np(inp)
    b = x.shape[0]
    rec = [_hand_recon(r[i], inp[i], reading, cfg.obs_scale) for i in range(len(inp))]
    kl = [0.0 if mode == "ae" else _hand_kl(mu[i], lv[i]) for i in range(len(inp))]
    expect = {"recon": np.mean(rec[:b]), "kl": np.mean(kl[:b])}
    if mode == "cr":
        expect["recon_aug"], expect["kl_aug"] = np.mean(rec[b:]), np.mean(kl[b:])
        cons = [_hand_consistency(mu[b + i], lv[b + i], mu[i], lv[i]) for i in range(b)]
        expect["consistency"] = np.mean(cons)
        expect["loss"] = (
            expect["recon"] + expect["recon_aug"] + beta * (expect["kl"] + expect["kl_aug"])
        ) + lam * expect["consistency"]
    else:
        expect["loss"] = expect["recon"] + beta * expect["kl"]
    for key, want in expect.items():
        assert float(terms[key].detach()) == pytest.approx(want, rel=1e-5), key
    if reading == "mean_chamfer":  # squared-distance means, not thousands of nats
        assert float(terms["recon"].detach()) < 10


@pytest.mark.parametrize("reading", ["gaussian", "mean_chamfer"])
def test_each_reading_trains_and_validates_in_its_reading(tiny_config, tmp_path, reading):
    run = tmp_path / "run"
    cfg = tiny_config(run, "mode=cr", f"recon={reading}", "beta=1e-3", "amp=none")
    summary = train(cfg, quiet=True)
    assert summary["status"] == "completed" and math.isfinite(summary["val_loss"])
    records = read_metrics(run)
    for r in (r for r in records if r["kind"] == "train"):
        want = r["recon"] + r["recon_aug"] + 1e-3 * (r["kl"] + r["kl_aug"]) + 0.1 * r["consistency"]
        assert r["loss"] == pytest.approx(want, rel=1e-5)
    (epoch,) = [r for r in records if r["kind"] == "epoch"]
    # The validation of the finished model, by hand in the run's reading.
    model = build_model(cfg)
    model.load_state_dict(load_checkpoint(run / "last.pt")["model"])
    model.eval()
    _, val_set = training_splits(cfg)
    recon, kl = [], []
    with torch.no_grad():
        for xb, _ in shard_loader(val_set, 16, DistInfo()):
            post = model.encode(xb)
            out = _np(model.decode(post.mu))
            for i in range(len(xb)):
                recon.append(_hand_recon(out[i], _np(xb[i]), reading, cfg.obs_scale))
                kl.append(_hand_kl(_np(post.mu[i]), _np(post.logvar[i])))
    assert epoch["val_recon"] == pytest.approx(np.mean(recon), rel=1e-5)
    assert epoch["val_kl"] == pytest.approx(np.mean(kl), rel=1e-5)
    assert epoch["val_loss"] == pytest.approx(epoch["val_recon"] + 1e-3 * epoch["val_kl"], rel=1e-9)
    assert (epoch["val_recon"] < 10) == (reading == "mean_chamfer")


def test_validate_follows_the_reading(tiny_overrides):
    cfg, model, *_ = _setup(tiny_overrides, "mode=base")
    _, val_set = training_splits(cfg)
    loader = shard_loader(val_set, 16, DistInfo())
    g = validate(model, loader, cfg, DistInfo(), CPU)
    m = validate(model, loader, cfg.replace(recon="mean_chamfer"), DistInfo(), CPU)
    assert g["val_kl"] == m["val_kl"] and g["val_chamfer"] == m["val_chamfer"]
    assert m["val_recon"] < 10 < g["val_recon"]
    assert m["val_loss"] == pytest.approx(m["val_recon"] + m["val_kl"])


# --------------------------------------------------------------------------- aug_target
@pytest.mark.parametrize("mode", ["aug", "cr"])
def test_canonical_target_changes_only_the_t_x_reconstruction(tiny_overrides, mode):
    cfg, model, x, t = _setup(tiny_overrides, f"mode={mode}")
    model.mode = "cr"
    a = compute_terms(model, x, cfg, t, _gen())
    c = compute_terms(model, x, cfg.replace(aug_target="canonical"), t, _gen())
    for key in ("recon", "kl", "kl_aug", "consistency", "chamfer"):
        assert torch.equal(a[key], c[key]), key
    assert not torch.equal(a["recon_aug"], c["recon_aug"])
    assert torch.allclose(c["loss"] - a["loss"], c["recon_aug"] - a["recon_aug"], rtol=1e-4)
    # canonical: the decoder output of t(x) against x; transformed: against t(x)
    inp, out = _forward(model, x, cfg, t)
    b = x.shape[0]
    r, inp = _np(out.recon), _np(inp)
    for terms, targets in ((a, inp[b:]), (c, inp[:b])):
        want = np.mean([_hand_recon(r[b + i], targets[i], "gaussian", 0.1) for i in range(b)])
        assert float(terms["recon_aug"].detach()) == pytest.approx(want, rel=1e-5)


def test_aug_target_does_not_touch_the_unpaired_modes(tiny_overrides):
    cfg, model, x, t = _setup(tiny_overrides, "mode=base")
    a = compute_terms(model, x, cfg, t, _gen())
    c = compute_terms(model, x, cfg.replace(aug_target="canonical"), t, _gen())
    assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)


# --------------------------------------------------------------------------- diagnostics
def _encoder_grad_norm(model) -> float:
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    return math.sqrt(sum(float(g.double().square().sum()) for g in grads))


@pytest.mark.parametrize("mode", ["base", "aug", "cr"])
def test_gradient_diagnostics_match_separate_backwards(tiny_overrides, mode):
    beta, lam = 2.0, 0.5
    cfg, model, x, t = _setup(tiny_overrides, f"mode={mode}", f"beta={beta}", f"lam={lam}")
    model.mode = "vae" if mode == "base" else "cr"
    terms = compute_terms(model, x, cfg, t, _gen(), diagnostics=True)
    diag = terms.pop("diagnostics")
    paired = mode != "base"
    parts = {
        "recon": lambda s: s["recon"] + s["recon_aug"] if paired else s["recon"],
        "kl": lambda s: beta * (s["kl"] + s["kl_aug"] if paired else s["kl"]),
        "consistency": lambda s: (lam if mode == "cr" else 0.0) * s["consistency"],
        "consistency_unweighted": lambda s: s["consistency"],
    }
    for name, part in parts.items():
        if name == "consistency_unweighted" and mode != "aug":
            assert "grad_consistency_unweighted" not in diag
            continue
        model.zero_grad(set_to_none=True)
        value = part(compute_terms(model, x, cfg, t, _gen()))
        if value.requires_grad:
            value.backward()
        assert diag[f"grad_{name}"] == pytest.approx(_encoder_grad_norm(model), rel=1e-5), name
        if name != "consistency_unweighted":
            assert diag[f"loss_{name}"] == pytest.approx(float(value.detach()), rel=1e-6), name
    assert diag["grad_recon"] > 0 and diag["grad_kl"] > 0
    assert (diag["grad_consistency"] > 0) == (mode == "cr")
    if mode == "aug":
        assert diag["grad_consistency_unweighted"] > 0


@pytest.mark.parametrize("mode", ["ae", "base", "aug", "cr"])
def test_diagnostics_records_every_n_steps(tiny_config, tmp_path, mode):
    run = tmp_path / "run"
    cfg = tiny_config(run, f"mode={mode}", "batch_size=4", "epochs=2", "grad_norms_every=3")
    steps = train(cfg, quiet=True)["step"]
    per_epoch = steps // 2
    assert per_epoch >= 3
    records = read_metrics(run)
    diag = [r for r in records if r["kind"] == "diagnostics"]
    # at the steps s (0-based, as the task sees them) with s % 3 == 0, logged with the step of
    # the train record of the same batch (s + 1: steps done after it)
    done = [s for s in range(steps) if s % 3 == 0]
    assert [r["step"] for r in diag] == [s + 1 for s in done]
    assert [r["epoch"] for r in diag] == [s // per_epoch + 1 for s in done]
    keys = {"grad_recon", "grad_kl", "grad_consistency", "loss_recon", "loss_kl"}
    for r in diag:
        assert keys | {"loss_consistency"} <= set(r)
        assert ("grad_consistency_unweighted" in r) == (mode == "aug")
        assert all(math.isfinite(v) for k, v in r.items() if k != "kind")
        assert r["grad_recon"] > 0 and r["loss_recon"] > 0
        if mode == "ae":
            assert r["grad_kl"] == 0 and r["loss_kl"] == 0
        else:
            assert r["grad_kl"] > 0 and r["loss_kl"] > 0
        if mode == "cr":
            assert r["grad_consistency"] > 0 and r["loss_consistency"] > 0
        else:
            assert r["grad_consistency"] == 0 and r["loss_consistency"] == 0
        if mode == "aug":
            assert r["grad_consistency_unweighted"] > 0
    # Not terms: not in the train records nor in the epoch means.
    for r in records:
        if r["kind"] in ("train", "epoch"):
            assert not any("grad_" in k or "loss_recon" in k for k in r), r
    assert any((run / "tensorboard").glob("events.out.tfevents.*"))


def test_diagnostics_off(tiny_config, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run, "grad_norms_every=none"), quiet=True)
    assert not [r for r in read_metrics(run) if r["kind"] == "diagnostics"]


@pytest.mark.parametrize("mode", ["base", "cr"])
def test_training_is_bitwise_unchanged_by_the_diagnostics(tiny_config, tmp_path, mode):
    states = {}
    for every in ("1", "none"):
        run = tmp_path / every
        train(tiny_config(run, f"mode={mode}", "amp=none", "device=cpu", "epochs=2",
                          f"grad_norms_every={every}"), quiet=True)  # fmt: skip
        states[every] = load_checkpoint(run / "last.pt")
        assert states[every]["step"] == 4
    on, off = states["1"], states["none"]
    for key in on["model"]:
        assert torch.equal(on["model"][key], off["model"][key]), key
    for pa, pb in zip(on["optimizer"]["state"].values(), off["optimizer"]["state"].values()):
        for key in pa:
            assert torch.equal(pa[key], pb[key]), key
    assert on["epoch_sums"] == off["epoch_sums"]


# --------------------------------------------------------------------------- config
def test_new_keys_are_checked_and_define_the_run():
    cfg = TrainConfig()
    assert (cfg.recon, cfg.aug_target, cfg.grad_norms_every) == ("gaussian", "transformed", 200)
    assert cfg.val_split == "holdout"
    for bad in ("recon=l2", "aug_target=x", "grad_norms_every=0"):
        with pytest.raises(ValueError, match=bad.split("=")[0]):
            load_config(overrides=[bad])
    saved = cfg.to_dict()
    assert cfg.replace(recon="mean_chamfer").run_defining_changes(saved) == ["recon"]
    assert cfg.replace(aug_target="canonical").run_defining_changes(saved) == ["aug_target"]
    assert cfg.replace(grad_norms_every=None).run_defining_changes(saved) == []
    # A config saved before these keys existed resumes under the defaults.
    old = {k: v for k, v in saved.items() if k not in ("recon", "aug_target", "grad_norms_every")}
    assert cfg.run_defining_changes(old) == []


def test_recon_terms_agree_with_the_model():
    from crfold.config import RECON_TERMS
    from crfold.models.foldingnet import RECON_TERMS as MODEL_TERMS

    assert RECON_TERMS == MODEL_TERMS


# --------------------------------------------------------------------------- the small recipe
def test_small_augmentation_recipe_builds_and_trains(tiny_config, tmp_path):
    cfg = tiny_config(tmp_path / "run", "aug_degrees=15", "aug_translate=0.05", "max_steps=1")
    t = build_transform(cfg, "y")
    assert repr(t) == (
        "Compose(transforms=[RandomRotation(axis='up', degrees=15.0, steps=None, up='y'), "
        "RandomTranslation(shift=0.05, per_axis=True), RandomJitter(sigma=0.01, clip=0.02)])"
    )
    rot = RandomRotation(axis="up", degrees=15.0, up="y").matrices(
        1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    angle = torch.atan2(rot[:, 0, 2], rot[:, 0, 0]).abs().rad2deg()  # about y
    assert float(angle.max()) <= 15.0 and float(angle.max()) > 14.0
    assert torch.allclose(rot[:, 1, 1], torch.ones(1000, dtype=torch.float64))
    x = torch.randn(64, 64, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = t(x, generator=torch.Generator().manual_seed(3))
    assert y.shape == x.shape and torch.isfinite(y).all()
    # about y: the y coordinates move by the shift (<= 0.05) and the jitter (<= 0.02) only
    assert float((y[..., 1] - x[..., 1]).abs().max()) <= 0.07 + 1e-9
    # the xz angle of each cloud (centred: the shift cancels; the jitter barely moves it)
    a, b = (c[..., [0, 2]] - c[..., [0, 2]].mean(1, keepdim=True) for c in (x, y))
    cross = (a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]).sum(1)
    theta = torch.atan2(cross, (a * b).sum((1, 2))).abs().rad2deg()  # (64,)
    assert float(theta.max()) < 15.5 and float(theta.max()) > 10
    summary = train(cfg, quiet=True)
    assert summary["status"] == "max_steps" and math.isfinite(summary["val_loss"])
