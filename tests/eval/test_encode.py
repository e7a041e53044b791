"""crfold.eval.encode / .reconstruction: loading a run, encoding a split, the Chamfer."""

from __future__ import annotations

import pytest
import torch

from crfold.eval.encode import encode_dataset, encode_posteriors, load_run, open_split
from crfold.eval.reconstruction import reconstruction_metrics
from crfold.io import load_checkpoint
from crfold.models.foldingnet import foldingnet_chamfer
from crfold.ops import chamfer_distance


def test_load_run_gives_the_trained_model_in_eval_mode(trained_run):
    model, cfg = load_run(trained_run)
    assert not model.training and cfg.latent_dim == 16 and cfg.mode == "cr"
    assert (model.k, model.grid_size, model.latent_dim) == (8, 6, 16)
    for which in ("best", "last"):
        loaded, _ = load_run(trained_run, which)
        saved = load_checkpoint(trained_run / f"{which}.pt")["model"]
        assert all(torch.equal(v, saved[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(ValueError, match="which"):
        load_run(trained_run, "first")
    with pytest.raises(FileNotFoundError, match="best.pt"):
        load_run(trained_run / "nope")


def test_load_run_refuses_a_run_of_another_task(tmp_path, trained_run):
    from crfold.io import save_checkpoint

    state = load_checkpoint(trained_run / "last.pt")
    state["config"] = {**state["config"], "task": "images"}
    save_checkpoint(tmp_path / "last.pt", state)
    with pytest.raises(ValueError, match="'images' run"):
        load_run(tmp_path, "last")


def test_encode_dataset_is_mu_in_order(trained_run):
    model, cfg = load_run(trained_run)
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
    with pytest.raises(ValueError, match="batch_size"):
        encode_dataset(model, test_set, batch_size=0)


def test_reconstruction_metrics_match_a_direct_computation(trained_run):
    model, cfg = load_run(trained_run)
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


def test_the_old_module_paths_still_import():
    import crfold.eval.probe
    import crfold.eval.run
    import crfold.experiments.table9
    from crfold import eval_run, evaluate, experiment, experiment_plots, experiment_report, probe

    assert evaluate.load_run is load_run and evaluate.probe_run is crfold.eval.run.probe_run
    assert evaluate.reconstruction_metrics is reconstruction_metrics
    assert (
        eval_run.evaluate_run is crfold.eval.run.evaluate_run and eval_run.EVAL_FILE == "eval.json"
    )
    assert probe.svm_probe is crfold.eval.probe.svm_probe
    assert experiment.run_experiment is crfold.experiments.table9.run_table9
    assert experiment_report.format_eval.__module__ == "crfold.eval.format"
    assert experiment_plots.plot_curves.__module__ == "crfold.experiments.plots"
