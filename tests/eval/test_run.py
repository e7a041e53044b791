"""crfold.eval.run / ``crfold eval`` / ``crfold probe``: every metric of a run in eval.json."""

from __future__ import annotations

import json
import math

import pytest
import torch

from crfold.cli import main
from crfold.data.synthetic import SyntheticShapes
from crfold.eval.consistency import FAMILIES, consistency_families, consistency_metrics
from crfold.eval.encode import encode_posteriors, load_run, open_split
from crfold.eval.format import format_eval
from crfold.eval.run import EVAL_FILE, EVAL_VERSION, PROBE_FILE, evaluate_run, probe_run
from crfold.metrics import active_units
from crfold.models.common import Posterior
from crfold.train import train


class RadialEncoder(torch.nn.Module):
    """Codes from the sorted distances of the points to their centroid, projected to L dims.

    Invariant to any rotation about the centroid and to translation, not to scaling.
    """

    def __init__(self, num_points: int, latent: int = 6):
        super().__init__()
        self.proj = torch.nn.Linear(num_points, latent)

    def encode(self, x: torch.Tensor) -> Posterior:
        r = (x - x.mean(dim=1, keepdim=True)).norm(dim=-1).sort(dim=1).values  # (B, N)
        mu = self.proj(r)
        return Posterior(mu, torch.full_like(mu, -2.0))


def test_consistency_is_zero_for_an_encoder_invariant_to_the_transform():
    data = SyntheticShapes("test", num_shapes=20, num_points=64, seed=0)
    torch.manual_seed(0)
    enc = RadialEncoder(64)
    fams = consistency_families("y")
    res = consistency_metrics(enc, data, fams, seed=3, batch_size=8)
    assert list(res) == list(FAMILIES)
    for name in ("rotation", "translation"):  # float32 rounding only
        assert res[name]["relative_mu_distance"] < 1e-4, name
        assert res[name]["kl"] < 1e-6, name
    assert res["scale"]["relative_mu_distance"] > 0.05  # scaling changes every radius
    assert res["jitter"]["relative_mu_distance"] > 1e-3
    assert all(r["n"] == 20 and r["code_distance"] > 0 for r in res.values())


def test_consistency_draws_are_seeded_per_family():
    data = SyntheticShapes("test", num_shapes=12, num_points=64, seed=1)
    enc = RadialEncoder(64)
    fams = consistency_families("y")
    alone = consistency_metrics(enc, data, {"scale": fams["scale"]}, seed=5, batch_size=4)
    together = consistency_metrics(enc, data, fams, seed=5, batch_size=4)
    other = consistency_metrics(enc, data, {"scale": fams["scale"]}, seed=6, batch_size=4)
    assert alone["scale"] == together["scale"]  # independent of the other families
    assert alone != other


def test_an_autoencoder_has_no_mi_and_no_consistency_kl(tmp_path, tiny_config):
    run = tmp_path / "ae"
    train(tiny_config(run, "mode=ae"), quiet=True)
    res = evaluate_run(run)
    assert res["mutual_information"]["nats"] is None
    assert all(c["kl"] is None and c["mu_distance"] >= 0 for c in res["consistency"].values())
    text = format_eval(res)
    assert "MI n/a" in text and "KL        n/a" in text


def test_evaluate_run_writes_every_metric(trained_run):
    res = evaluate_run(trained_run, which="last")
    saved = json.loads((trained_run / EVAL_FILE).read_text())
    for key in ("probe", "probe_rotated_test", "probe_rotated_both"):
        for protocol in ("raw", "standardized"):
            got = saved[key][protocol]["svm"]["accuracy"]
            assert got == res[key][protocol]["svm"]["accuracy"]
    assert res["checkpoint"] == "last" and res["mode"] == "cr" and res["num_samples"] == 10
    assert res["settings"] == {
        "which": "last",
        "data": None,
        "overrides": [],
        "families": list(FAMILIES),
        "seed": 1234,
        "mi_batch_size": None,
        "version": EVAL_VERSION,
    }
    rec = res["reconstruction"]
    assert rec["chamfer_foldingnet"] > 0 and rec["chamfer_squared"] > 0
    assert res["probe"]["headline"] == "raw" and res["probe"]["C"] == 1.0
    for protocol in ("raw", "standardized"):
        for probe in ("svm", "logistic"):
            r = res["probe"][protocol][probe]
            assert 0.0 <= r["accuracy"] <= 1.0 and r["standardize"] == (protocol != "raw")
            assert r["n_train"] == 20 and r["n_test"] == 10
        for key in ("probe_rotated_test", "probe_rotated_both"):
            r = res[key][protocol]["svm"]
            assert 0.0 <= r["accuracy"] <= 1.0 and (r["n_train"], r["n_test"]) == (20, 10)
    assert res["mutual_information"]["batch_size"] == 10
    assert math.isfinite(res["mutual_information"]["nats"])
    # active units agree with the metric on the same codes
    model, cfg = load_run(trained_run, "last")
    mu, _, _ = encode_posteriors(model, open_split(cfg, "test"))
    assert res["active_units"]["count"] == active_units(mu)[0]
    assert set(res["consistency"]) == set(FAMILIES) == set(res["transforms"])
    for c in res["consistency"].values():
        assert c["kl"] >= 0 and c["mu_distance"] >= 0 and c["n"] == 10


def test_evaluate_run_is_reproducible_and_subsets_families(trained_run):
    a = evaluate_run(trained_run, families=("jitter",), write=False)
    b = evaluate_run(trained_run, families=("jitter",), write=False)
    assert list(a["consistency"]) == ["jitter"]
    assert a["consistency"] == b["consistency"] and a["probe"] == b["probe"]
    with pytest.raises(ValueError, match="families"):
        evaluate_run(trained_run, families=("shear",), write=False)


def test_evaluate_run_on_other_data_changes_only_data_keys(trained_run):
    res = evaluate_run(trained_run, overrides=["synthetic_test_shapes=12"], write=False)
    assert res["num_samples"] == 12
    res = evaluate_run(trained_run, data="synthetic", write=False)
    assert res["data"] == "synthetic"
    with pytest.raises(ValueError, match="only data keys.*latent_dim"):
        evaluate_run(trained_run, overrides=["latent_dim=8"], write=False)
    with pytest.raises(ValueError, match="key=value"):
        evaluate_run(trained_run, overrides=["latent_dim"], write=False)


def test_evaluate_run_names_a_missing_checkpoint_and_creates_nothing(tmp_path):
    for write in (True, False):
        with pytest.raises(FileNotFoundError, match="best.pt"):
            evaluate_run(tmp_path / "nothing", write=write)
        with pytest.raises(FileNotFoundError, match="last.pt"):
            probe_run(tmp_path / "nothing", which="last", write=write)
    assert not (tmp_path / "nothing").exists()


def test_eval_command_prints_and_writes(trained_run, capsys):
    (trained_run / EVAL_FILE).unlink(missing_ok=True)
    assert main(["eval", str(trained_run), "--quiet", "--families", "rotation,scale"]) == 0
    out = capsys.readouterr().out
    assert "SVM" in out and "rotation" in out and "scale" in out and "jitter" not in out
    assert out.index("latent consistency") < out.index(f"wrote {trained_run / EVAL_FILE}")
    assert json.loads((trained_run / EVAL_FILE).read_text())["checkpoint"] == "best"
    assert main(["eval", str(trained_run), "--quiet", "--set", "num_points=8"]) == 2  # < k + 1
    assert main(["eval", str(trained_run), "--quiet", "--set", "lr=1"]) == 2
    err = capsys.readouterr().err
    assert "crfold eval: error" in err and "lr" in err


def test_probe_run_writes_probe_json(trained_run):
    res = probe_run(trained_run, C=0.5, standardize=True)
    on_disk = json.loads((trained_run / PROBE_FILE).read_text())
    assert on_disk["svm"]["accuracy"] == res["svm"]["accuracy"]
    for name in ("svm", "logistic"):
        r = res[name]  # the headline protocol: standardized, as asked
        assert r["probe"] == name and 0.0 <= r["accuracy"] <= 1.0
        assert (r["C"], r["standardize"], r["n_train"], r["n_test"]) == (0.5, True, 20, 10)
        assert r == res["standardized"][name] and res["raw"][name]["standardize"] is False
    assert res["headline"] == "standardized" and res["seed"] == 1234
    assert res["probe_rotated_test"]["raw"]["svm"]["C"] == 0.5
    assert res["checkpoint"] == "best" and res["step"] >= 1 and len(res["classes"]) == 10
    defaults = probe_run(trained_run, which="last", write=False)
    assert defaults["svm"]["C"] == 1.0 and defaults["svm"]["standardize"] is False
    assert defaults["headline"] == "raw" and defaults["svm"] == defaults["raw"]["svm"]
    summary = json.loads((trained_run / "summary.json").read_text())
    assert defaults["step"] == summary["step"]  # last.pt


def test_probe_command_prints_then_writes(trained_run, capsys):
    (trained_run / PROBE_FILE).unlink(missing_ok=True)
    assert main(["probe", str(trained_run), "--quiet", "--which", "last", "--C", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "linear SVM" in out and "logistic" in out
    assert out.index("logistic") < out.index(f"wrote {trained_run / PROBE_FILE}")
    assert json.loads((trained_run / PROBE_FILE).read_text())["svm"]["C"] == 0.5
