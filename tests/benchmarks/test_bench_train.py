"""Smoke tests of benchmarks/bench_train.py at tiny sizes.

They check the printed table, that the plain baseline really runs on dense torch ops (and
crfold's steps on crfold's), that they compute the same objective, that the default crfold step
autocasts where ``amp=auto`` says so, and that a step trains; they never assert on timings.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from crfold.amp import amp_dtype
from crfold.models import FoldingNetVAE, foldingnet, knn_excluding_self
from crfold.ops import chamfer_distance
from crfold.transforms import default_cr_transform

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
HEADER = ["size", "mode", "implementation", "samples/s", "step ms", "speedup vs plain"]
TINY = ["--sizes", "2x40x8x5", "--steps", "1", "--modes", "ae,base,cr"]


@pytest.fixture()
def bench(monkeypatch):
    """The script as a module (its directory on sys.path, as when it runs as a script)."""
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    return importlib.import_module("bench_train")


def tiny_model(mode: str) -> FoldingNetVAE:
    """The model of a training mode: an AE for ``ae``, else a VAE."""
    torch.manual_seed(0)
    return FoldingNetVAE(latent_dim=8, k=16, grid_size=5, mode="ae" if mode == "ae" else "vae")


def test_main_prints_one_markdown_table(bench, capsys):
    assert bench.main(TINY) == 0
    out = capsys.readouterr().out
    assert out.startswith("crfold backend: ")
    lines = [ln for ln in out.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    assert cells[0] == HEADER and set(lines[1]) <= {"|", "-"}
    rows = cells[2:]
    expected = [["2x40x8x5", m, i] for m in ("ae", "base", "cr") for i in bench.IMPLS]
    assert [r[:3] for r in rows] == expected
    for _size, _mode, impl, samples, ms, speedup in rows:
        assert float(samples) > 0 and float(ms) > 0
        assert float(samples) == pytest.approx(2 / (float(ms) / 1e3), rel=0.1)
        assert speedup.endswith("x") and float(speedup[:-1]) > 0
        if impl == "plain":
            assert speedup == "1.00x"
    agreement = next(ln for ln in out.splitlines() if "loss agreement" in ln)
    for part in agreement.split(": ")[1].split(", "):
        name, value = part.split()
        # float32 computes the same objective; bf16 autocast agrees to its rounding
        assert float(value) < (1e-4 if name.endswith("fp32") else 3e-2), agreement


def test_modes_option_selects_rows(bench, capsys):
    assert bench.main([*TINY, "--modes", "base", "--warmup", "0"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if "| base " in ln]
    assert len(rows) == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["--modes", "vae+aug"],
        ["--modes", ""],
        ["--steps", "0"],
        ["--sizes", "2x10x8x5"],
        ["--sizes", "huge"],
        ["--sizes", ""],
        ["--warmup", "-1"],
        ["--device", "tpu"],
    ],
)
def test_bad_arguments_exit_with_usage_error(bench, argv, capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(argv)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_plain_ops_agree_with_crfold_ops(bench):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 50, 3, generator=g)
    assert torch.equal(bench.dense_knn_excluding_self(x, 16), knn_excluding_self(x, 16))
    recon = torch.randn(3, 36, 3, generator=g)
    expected = chamfer_distance(recon, x, point_reduction="sum", batch_reduction=None)
    torch.testing.assert_close(bench.cdist_chamfer_sum(recon, x), expected, rtol=1e-5, atol=1e-5)


def _forbid(name):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} must not be called by this implementation")

    return fail


def test_plain_step_uses_only_dense_ops(bench, monkeypatch):
    calls = []
    dense = bench.dense_knn_excluding_self
    monkeypatch.setattr(
        bench, "dense_knn_excluding_self", lambda x, k: calls.append(k) or dense(x, k)
    )
    monkeypatch.setattr(foldingnet, "knn_points", _forbid("crfold.ops.knn_points"))
    monkeypatch.setattr(foldingnet, "chamfer_distance", _forbid("crfold.ops.chamfer_distance"))
    monkeypatch.setattr(foldingnet, "graph_max_pool", _forbid("crfold.ops.graph_max_pool"))
    monkeypatch.setattr(foldingnet, "global_max_pool", _forbid("crfold.ops.global_max_pool"))
    x = bench.make_batch(2, 40, "cpu")
    gen = torch.Generator().manual_seed(0)
    terms = bench.objective(tiny_model("cr"), x, "cr", "plain", default_cr_transform(), gen)
    assert calls == [16]  # x and t(x) go through one forward of 2B clouds
    assert set(terms) >= {"loss", "consistency"} and torch.isfinite(terms["loss"])
    assert foldingnet.knn_excluding_self is knn_excluding_self  # the patches were undone


@pytest.mark.parametrize("impl", ["crfold-fp32", "crfold"])
def test_crfold_steps_use_crfold_ops(bench, monkeypatch, impl):
    monkeypatch.setattr(bench, "dense_knn_excluding_self", _forbid("the dense kNN"))
    monkeypatch.setattr(bench, "cdist_chamfer_sum", _forbid("the cdist Chamfer"))
    x = bench.make_batch(2, 40, "cpu")
    gen = torch.Generator().manual_seed(0)
    terms = bench.objective(tiny_model("vae"), x, "base", impl, None, gen)
    assert set(terms) >= {"loss", "recon", "kl", "chamfer"} and terms["loss"].dtype == torch.float32
    expected = amp_dtype("auto", "cpu") if impl == "crfold" else None
    assert bench.impl_dtype(impl, x.device) == expected


@pytest.mark.parametrize("mode", ["ae", "base", "cr"])
def test_losses_agree_and_a_step_trains(bench, mode):
    x = bench.make_batch(3, 40, "cpu")
    assert x.shape == (3, 40, 3) and x.dtype == torch.float32
    model = tiny_model(mode)
    agreement = bench.loss_agreement(model, x, mode, default_cr_transform(), seed=0)
    assert agreement["crfold-fp32"] < 1e-5 and agreement["crfold"] < 3e-2
    before = [p.detach().clone() for p in model.parameters()]
    loss = bench.TrainStep(model, x, mode, "plain", default_cr_transform(), seed=0)()
    assert torch.isfinite(torch.tensor(loss))
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert sum(changed) >= len(changed) - 1  # every trained tensor moved (ae: no logvar head)


def test_table_rows_speedup(bench):
    times = {("paper", "base"): {"plain": 1.0, "crfold-fp32": 0.5, "crfold": 0.25}}
    rows = bench.table_rows(times, [bench.PRESETS["paper"]])
    assert rows == [
        ["paper", "base", "plain", "16.00", "1000", "1.00x"],
        ["paper", "base", "crfold-fp32", "32.00", "500", "2.00x"],
        ["paper", "base", "crfold", "64.00", "250", "4.00x"],
    ]


def test_sizes_parse(bench):
    assert bench.parse_size("table9") == bench.Size("table9", 8, 256, 128, 16)
    assert bench.parse_size("4x64x8x5") == bench.Size("4x64x8x5", 4, 64, 8, 5)
