"""Smoke tests of benchmarks/bench_train.py at tiny sizes.

They check the printed table, that the plain baseline really runs on dense torch ops (and
crfold's step on crfold's), that both compute the same objective, and that a step trains; they
never assert on timings.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from crfold.models import FoldingNetVAE, foldingnet, knn_excluding_self
from crfold.ops import chamfer_distance
from crfold.transforms import default_cr_transform

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
HEADER = ["mode", "implementation", "samples/s", "step ms", "speedup vs plain"]
TINY = ["--points", "40", "--batch", "2", "--grid", "5", "--latent", "8", "--steps", "1"]


@pytest.fixture()
def bench(monkeypatch):
    """The script as a module (its directory on sys.path, as when it runs as a script)."""
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    return importlib.import_module("bench_train")


def tiny_model(mode: str) -> FoldingNetVAE:
    torch.manual_seed(0)
    return FoldingNetVAE(latent_dim=8, k=16, grid_size=5, mode=mode)


def test_main_prints_one_markdown_table(bench, capsys):
    assert bench.main(TINY) == 0
    out = capsys.readouterr().out
    assert out.startswith("crfold backend: ")
    lines = [ln for ln in out.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    assert cells[0] == HEADER and set(lines[1]) <= {"|", "-"}
    rows = cells[2:]
    assert [r[:2] for r in rows] == [[m, i] for m in ("ae", "vae", "cr") for i in bench.IMPLS]
    for _mode, impl, samples, ms, speedup in rows:
        assert float(samples) > 0 and float(ms) > 0
        assert float(samples) == pytest.approx(2 / (float(ms) / 1e3), rel=0.1)
        assert speedup.endswith("x") and float(speedup[:-1]) > 0
        if impl == "plain":
            assert speedup == "1.00x"
    agreement = next(ln for ln in out.splitlines() if "loss agreement" in ln)
    for part in agreement.split(": ")[1].split(", "):
        assert float(part.split()[1]) < 1e-4, agreement


def test_modes_option_selects_rows(bench, capsys):
    assert bench.main([*TINY, "--modes", "vae", "--warmup", "0"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| vae")]
    assert len(rows) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["--modes", "vae+aug"],
        ["--modes", ""],
        ["--steps", "0"],
        ["--points", "10"],
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
    x = bench.make_batch(2, 40, "cpu")
    gen = torch.Generator().manual_seed(0)
    terms = bench.objective(tiny_model("cr"), x, "cr", "plain", default_cr_transform(), gen)
    assert calls == [16, 16]  # one graph for x, one for t(x)
    assert set(terms) >= {"loss", "consistency"} and torch.isfinite(terms["loss"])
    assert foldingnet.knn_excluding_self is knn_excluding_self  # the patch was undone


def test_crfold_step_uses_crfold_ops(bench, monkeypatch):
    monkeypatch.setattr(bench, "dense_knn_excluding_self", _forbid("the dense kNN"))
    monkeypatch.setattr(bench, "cdist_chamfer_sum", _forbid("the cdist Chamfer"))
    x = bench.make_batch(2, 40, "cpu")
    gen = torch.Generator().manual_seed(0)
    terms = bench.objective(tiny_model("vae"), x, "vae", "crfold", None, gen)
    assert set(terms) == {"loss", "recon", "kl"}


@pytest.mark.parametrize("mode", ["ae", "vae", "cr"])
def test_losses_agree_and_a_step_trains(bench, mode):
    x = bench.make_batch(3, 40, "cpu")
    assert x.shape == (3, 40, 3) and x.dtype == torch.float32
    model = tiny_model(mode)
    assert bench.loss_agreement(model, x, mode, default_cr_transform(), seed=0) < 1e-5
    before = [p.detach().clone() for p in model.parameters()]
    loss = bench.TrainStep(model, x, mode, "plain", default_cr_transform(), seed=0)()
    assert torch.isfinite(torch.tensor(loss))
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert sum(changed) >= len(changed) - 1  # every trained tensor moved (ae: no logvar head)


def test_table_rows_speedup(bench):
    rows = bench.table_rows({"vae": {"crfold": 0.5, "plain": 1.0}}, batch=16)
    assert rows == [
        ["vae", "crfold", "32.00", "500", "2.00x"],
        ["vae", "plain", "16.00", "1000", "1.00x"],
    ]
