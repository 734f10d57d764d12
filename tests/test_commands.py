"""End-to-end runs of the real commands on real MNIST at a small size, from another folder."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_script

SMALL = ["--epochs", "1", "--train-size", "2000", "--batch-size", "64"]


@pytest.mark.parametrize("model", ["bae", "dae", "vae"])
def test_train_then_evaluate(model, mnist_dir, tmp_path):
    out = tmp_path / "run"
    proc = run_script("train.py", "--model", model, *SMALL, "--data-dir", mnist_dir, "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "epoch   1/1" in proc.stdout and "Traceback" not in proc.stderr

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["model"] == model and metrics["config"]["train_size"] == 2000
    assert metrics["config"]["dataset"] == ("mnist" if model == "bae" else "variance")
    assert len(metrics["loss_history"]) == 1 and np.isfinite(metrics["loss_history"][0])
    assert metrics["train_seconds"] > 0 and metrics["samples_per_second"] > 0
    assert metrics["device"] == "cpu" and metrics["torch_version"] == torch.__version__
    # even a tiny run learns something: the probe beats chance (10%) clearly
    assert 0.2 < metrics["probe_test_accuracy"] <= 1 and 0.2 < metrics["probe_train_accuracy"] <= 1
    if model == "bae":
        assert 0 < metrics["test_mse"] < 0.12 and 0 < metrics["pca_test_mse"] < 0.06
    if model == "dae":
        # no denoiser beats the Bayes-optimal one (up to the noise of one draw)
        assert metrics["mse_over_oracle"] > 0.98 and metrics["oracle_mse"] > 0
        assert np.isclose(metrics["mse_over_oracle"], metrics["test_mse"] / metrics["oracle_mse"])
        # the probe is also reported with the encoder's BatchNorm statistics from training
        assert 0.2 < metrics["probe_test_accuracy_unadapted"] <= 1
    if model == "vae":
        assert metrics["test_neg_elbo"] > metrics["oracle_nll"]
        assert np.isclose(metrics["test_neg_elbo"], metrics["test_kl"] + metrics["test_nll"])

    codes_train, codes_test = np.load(out / "codes_train.npy"), np.load(out / "codes_test.npy")
    assert codes_train.shape == (60000, 10) and codes_test.shape == (10000, 10)
    assert np.load(out / "labels_train.npy")[:5].tolist() == [5, 0, 4, 1, 9]
    assert np.load(out / "labels_test.npy").shape == (10000,)
    assert np.load(out / "pca_test.npy").shape == (10000, 2)

    scatter = np.asarray(Image.open(out / "pca_test.ppm"))
    assert scatter.ndim == 3 and len(np.unique(scatter.reshape(-1, 3), axis=0)) > 10
    recon = np.asarray(Image.open(out / "recon.pgm"))
    rows = {"bae": 2, "dae": 6, "vae": 5}[model]
    assert recon.shape == (rows * 30 + 2, 10 * 30 + 2)
    assert np.array_equal(np.asarray(Image.open(out / "recon.png")), recon)
    if model == "vae":
        assert np.asarray(Image.open(out / "samples.pgm")).shape == (10 * 30 + 2, 10 * 30 + 2)
    assert not (out / "resume.pt").exists()  # a finished run leaves only its result

    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert ckpt["config"] == metrics["config"]

    if model == "bae":
        # evaluating the saved model again, from anywhere, reproduces the folder
        first = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "model.pt"}
        for p in out.iterdir():
            if p.name != "model.pt":
                p.unlink()
        proc = run_script("evaluate.py", out / "model.pt", "--data-dir", mnist_dir, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        again = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "model.pt"}
        assert again.keys() == first.keys()
        for name in first:
            assert again[name] == first[name], name


def test_negative_control_bae_on_variance_mnist(mnist_dir, tmp_path):
    # The seed's claim, made a test: a plain MSE autoencoder cannot code varianceMNIST. Its best
    # output is ~0, so its test MSE stays near the data's own mean square (E[x^2] = E[s^2] ~ 0.1).
    out = tmp_path / "run"
    proc = run_script("train.py", "--model", "bae", "--dataset", "variance", *SMALL, "--data-dir", mnist_dir,
                      "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["dataset"] == "variance"
    assert metrics["test_mse"] > 0.09
    assert np.asarray(Image.open(out / "recon.pgm")).shape == (3 * 30 + 2, 10 * 30 + 2)
