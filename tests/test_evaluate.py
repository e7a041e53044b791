"""crfold.evaluate: loading a run, encoding a split, reconstruction metrics, probes."""

from __future__ import annotations

import json

import pytest
import torch

from crfold.checkpoint import load_checkpoint
from crfold.evaluate import (
    encode_dataset,
    encode_posteriors,
    load_run,
    open_split,
    probe_run,
    reconstruction_metrics,
)
from crfold.models.foldingnet import foldingnet_chamfer
from crfold.ops import chamfer_distance
from crfold.train import train
from tests.test_train import tiny


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("eval") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    # 20 train shapes (2 per class of the 10), 10 test shapes: each class in both splits.
    train(
        tiny(run, "synthetic_train_shapes=20", "synthetic_test_shapes=10", "epochs=2"), quiet=True
    )
    torch.set_num_threads(before)
    return run


def test_load_run_gives_the_trained_model_in_eval_mode(run_dir):
    model, cfg = load_run(run_dir)
    assert not model.training and cfg.latent_dim == 16 and cfg.mode == "cr"
    assert (model.k, model.grid_size, model.latent_dim) == (8, 6, 16)
    for which in ("best", "last"):
        loaded, _ = load_run(run_dir, which)
        saved = load_checkpoint(run_dir / f"{which}.pt")["model"]
        assert all(torch.equal(v, saved[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(ValueError, match="which"):
        load_run(run_dir, "first")
    with pytest.raises(FileNotFoundError, match="best.pt"):
        load_run(run_dir / "nope")


def test_encode_dataset_is_mu_in_order(run_dir):
    model, cfg = load_run(run_dir)
    test_set = open_split(cfg, "test")
    model.train()  # encode_dataset switches to eval and back
    mu, labels = encode_dataset(model, test_set, batch_size=5)
    assert model.training
    assert mu.shape == (len(test_set), 16) and mu.dtype == torch.float32
    assert labels.dtype == torch.int64 and torch.equal(labels, test_set.labels)
    x = torch.stack([test_set[i][0] for i in range(len(test_set))])
    with torch.no_grad():
        expected = model.eval().encode(x).mu
    torch.testing.assert_close(mu, expected, rtol=1e-5, atol=1e-6)
    mu2, logvar, labels2 = encode_posteriors(model, test_set, batch_size=64)
    assert torch.equal(mu2, mu) or torch.allclose(mu2, mu, atol=1e-6)
    assert logvar.shape == mu.shape and torch.equal(labels2, labels)


def test_reconstruction_metrics_match_a_direct_computation(run_dir):
    model, cfg = load_run(run_dir)
    test_set = open_split(cfg, "test")
    res = reconstruction_metrics(model, test_set, batch_size=5)
    x = torch.stack([test_set[i][0] for i in range(len(test_set))])
    with torch.no_grad():
        recon = model.decode(model.encode(x).mu)
    assert res["num_samples"] == len(test_set) and res["grid_size"] == 6
    assert res["chamfer_foldingnet"] == pytest.approx(
        float(foldingnet_chamfer(recon, x).mean()), rel=1e-5
    )
    assert res["chamfer_squared"] == pytest.approx(float(chamfer_distance(recon, x)), rel=1e-5)
    denser = reconstruction_metrics(model, test_set, grid_size=8)
    assert denser["grid_size"] == 8


def test_probe_run_writes_probe_json(run_dir):
    res = probe_run(run_dir, C=0.5, standardize=True)
    on_disk = json.loads((run_dir / "probe.json").read_text())
    assert on_disk["svm"]["accuracy"] == res["svm"]["accuracy"]
    for name in ("svm", "logistic"):
        r = res[name]
        assert r["probe"] == name and 0.0 <= r["accuracy"] <= 1.0
        assert (r["C"], r["standardize"], r["n_train"], r["n_test"]) == (0.5, True, 20, 10)
    assert res["checkpoint"] == "best" and res["step"] >= 1 and len(res["classes"]) == 10
    defaults = probe_run(run_dir, which="last", write=False)
    assert defaults["svm"]["C"] == 1.0 and defaults["svm"]["standardize"] is False
    assert defaults["step"] == 6  # 3 steps of 8 per epoch, 2 epochs
