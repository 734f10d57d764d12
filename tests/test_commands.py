"""End-to-end runs of the real commands on real MNIST at a small size, from another folder."""

import json
import re
import shlex

import numpy as np
import pytest
import torch
from PIL import Image

import ae
import data
import evaluate
import train
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

    # The saved arrays: the codes of the 2000 training images the model saw and of the 10000 test
    # images, in MNIST's order; fitting the probe again on them gives exactly the reported numbers.
    codes_train, codes_test = np.load(out / "codes_train.npy"), np.load(out / "codes_test.npy")
    labels_train, labels_test = np.load(out / "labels_train.npy"), np.load(out / "labels_test.npy")
    assert codes_train.shape == (2000, 10) and codes_test.shape == (10000, 10)
    assert labels_train[:5].tolist() == [5, 0, 4, 1, 9] and labels_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    codes_train, codes_test, labels_train, labels_test = map(torch.as_tensor, (codes_train, codes_test, labels_train, labels_test))
    predict = evaluate.fit_probe(codes_train, labels_train)
    assert evaluate.accuracy(predict, codes_test, labels_test) == metrics["probe_test_accuracy"]
    assert evaluate.accuracy(predict, codes_train, labels_train) == metrics["probe_train_accuracy"]
    assert evaluate.knn_accuracy(codes_train, labels_train, codes_test, labels_test) == metrics["knn_test_accuracy"]
    assert 0.2 < metrics["knn_test_accuracy"] <= 1
    assert np.load(out / "pca_test.npy").shape == (10000, 2)
    if model == "dae":  # the excess over the optimal denoiser, split by pixel, adds up
        assert sum(metrics["excess_mse"].values()) == pytest.approx(metrics["test_mse"] - metrics["oracle_mse"], rel=1e-5)
    if model == "vae":  # the KL per code dimension, the dimensions in use, the gap to the true model
        assert sum(metrics["kl_per_dimension"]) == pytest.approx(metrics["test_kl"], rel=1e-6)
        assert metrics["active_units"] == int((codes_test.double().var(0) > 0.01).sum())
        gap = metrics["gap_to_true_model"]
        assert sum(gap.values()) == pytest.approx(metrics["test_neg_elbo"] - metrics["oracle_nll"], rel=1e-5)
        assert gap["kl"] == metrics["test_kl"]
    baselines = metrics["baselines"]
    assert set(baselines) == {"pixels", "pca", "untrained"} | ({"pixels_squared"} if model != "bae" else set())
    assert all(0 < v <= 1 for v in baselines.values())

    # The first test codes are the model's codes of the first test images: MNIST itself (BAE), or
    # one varianceMNIST draw from the test seed's generator (VAE, whose encoder is used as trained)
    images, _ = data.load_mnist(mnist_dir, train=False)
    ckpt = torch.load(out / "model.pt", weights_only=True)
    if model != "dae":
        net = ae.MODELS[model](10).eval()
        net.load_state_dict(ckpt["model"])
        s = images[:5].float() / 255
        x = s if model == "bae" else s * torch.randn(s.shape, generator=torch.Generator().manual_seed(evaluate.SEEDS["test"]))
        with torch.no_grad():
            np.testing.assert_allclose(net.encode(x), codes_test[:5], rtol=1e-4, atol=1e-5)
    else:  # the DAE's reported codes are those of a copy with BatchNorm statistics of clean inputs
        net = ae.DenoisingAE(10).eval()
        net.load_state_dict(ckpt["model"])
        train_images, _ = data.load_mnist(mnist_dir, train=True)
        adapted = evaluate.encoder_for_codes(net, train_images[:2000], "variance", "cpu")
        own, clean = (evaluate.codes_of(m, images[:5], "variance", "cpu", evaluate.SEEDS["test"]) for m in (net, adapted))
        np.testing.assert_allclose(clean, codes_test[:5], rtol=1e-4, atol=1e-5)
        assert not np.allclose(own, codes_test[:5], rtol=1e-2, atol=1e-2)  # the model's own statistics differ

    scatter = np.asarray(Image.open(out / "pca_test.ppm"))
    assert scatter.ndim == 3 and len(np.unique(scatter.reshape(-1, 3), axis=0)) > 10
    # recon.pgm: a row per stage, a column per digit 0-9 (the first test image of each), each
    # 28x28 digit at (2 + 30 row, 2 + 30 column). Row 0 is MNIST itself, byte for byte; row 1 of
    # varianceMNIST is the input x = s * e (e from the test seed's generator), -1..1 shown as 0..255.
    recon = np.asarray(Image.open(out / "recon.pgm"))
    rows = {"bae": 2, "dae": 6, "vae": 5}[model]
    assert recon.shape == (rows * 30 + 2, 10 * 30 + 2)
    assert np.array_equal(np.asarray(Image.open(out / "recon.png"))[:, :, 0], recon)
    _, test_labels = data.load_mnist(mnist_dir, train=False)
    first = [int(torch.nonzero(test_labels == d)[0, 0]) for d in range(10)]

    def tile(picture, row, col):
        return picture[2 + 30 * row: 30 + 30 * row, 2 + 30 * col: 30 + 30 * col].astype(int)

    for d in range(10):
        assert np.array_equal(tile(recon, 0, d), images[first[d], 0].numpy()), d
    if model != "bae":
        s = images[first].float() / 255
        x = s * torch.randn(s.shape, generator=torch.Generator().manual_seed(evaluate.SEEDS["test"]))
        shown = np.floor(((x[:, 0] + 1) / 2).clamp(0, 1).numpy() * 255 + 0.5)
        for d in range(10):
            assert np.abs(tile(recon, 1, d) - shown[d]).max() <= 1, d
    # interpolation.pgm: pairs (0, 1), (2, 3), ...: the first digit, 10 decoded steps, the second
    inter = np.asarray(Image.open(out / "interpolation.pgm"))
    assert inter.shape == (5 * 30 + 2, 12 * 30 + 2)
    for r in range(5):
        assert np.array_equal(tile(inter, r, 0), images[first[2 * r], 0].numpy())
        assert np.array_equal(tile(inter, r, 11), images[first[2 * r + 1], 0].numpy())
    # neighbours.pgm: a row per digit, the test digit, then the training images of the 8 nearest
    # codes (standardised by the training codes' statistics), found here by numpy
    neighbours = np.asarray(Image.open(out / "neighbours.pgm"))
    assert neighbours.shape == (10 * 30 + 2, 9 * 30 + 2)
    train_images, _ = data.load_mnist(mnist_dir, train=True)
    a = codes_train.double().numpy()
    mean, std = a.mean(0), a.std(0, ddof=1)
    for d in range(10):
        dist = ((((codes_test[first[d]].double().numpy() - mean) / std) - (a - mean) / std) ** 2).sum(1)
        assert np.array_equal(tile(neighbours, d, 0), images[first[d], 0].numpy())
        for j, i in enumerate(np.argsort(dist, kind="stable")[:8]):
            assert np.array_equal(tile(neighbours, d, 1 + j), train_images[i, 0].numpy()), (d, j)
    if model == "vae":
        assert np.asarray(Image.open(out / "samples.pgm")).shape == (10 * 30 + 2, 10 * 30 + 2)
        assert np.asarray(Image.open(out / "traversal.pgm")).shape == (10 * 30 + 2, 9 * 30 + 2)
        assert metrics["subset_size"] == 500 and metrics["is_samples"] == 100
        # -ELBO >= -log p(x) >= the true model's NLL, on the same 500 test images
        assert metrics["subset_neg_elbo"] >= metrics["test_nll_is"] > metrics["subset_oracle_nll"]
    assert not (out / "resume.pt").exists()  # a finished run leaves only its result

    assert ckpt["config"] == metrics["config"]
    check_report_and_curve(out, metrics, ckpt["history"])

    # evaluating the saved model again, from anywhere, reproduces the folder byte for byte: the
    # DAE's adapted copy, the baselines, the VAE's importance sampling and pictures are deterministic
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


def check_report_and_curve(out, metrics, history):
    # loss.ppm: the training curve of every step (2000 // 64 = 31), the same pixels as loss.png
    assert len(history["step_losses"]) == 31 and np.isclose(np.mean(history["step_losses"]), history["loss_history"][0])
    curve = np.asarray(Image.open(out / "loss.ppm"))
    assert curve.shape == (360, 720, 3) and np.array_equal(np.asarray(Image.open(out / "loss.png")), curve)
    # report.md: every picture it names is in the folder, and each picture of the folder is in it
    report = (out / "report.md").read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)
    assert links and all((out / name).exists() for name in links), links
    assert set(links) == {p.name for p in out.glob("*.png")}
    # its numbers are metrics.json's, in the lines the run printed, inside one ```text block
    block = report.split("```text\n")[1].split("\n```")[0].splitlines()
    assert block == evaluate.summary_lines(metrics)
    for number in (metrics["probe_test_accuracy"], metrics["knn_test_accuracy"], metrics["baselines"]["untrained"],
                   metrics["baselines"]["pixels"]):
        assert f"{number:.2%}" in block[0] + block[1]
    # and its command rebuilds the run's config
    command = next(line.strip() for line in report.splitlines() if line.strip().startswith("python train.py"))
    args = train.get_parser().parse_args(shlex.split(command)[2:])
    assert train.make_config(args) == metrics["config"]


def test_negative_control_bae_on_variance_mnist(mnist_dir, tmp_path):
    # The original implementation's claim, made a test: a plain MSE autoencoder cannot code
    # varianceMNIST. Its best output is ~0, so its test MSE stays near the data's own mean square
    # (E[x^2] = E[s^2] ~ 0.1).
    out = tmp_path / "run"
    proc = run_script("train.py", "--model", "bae", "--dataset", "variance", *SMALL, "--data-dir", mnist_dir,
                      "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["dataset"] == "variance"
    assert metrics["test_mse"] > 0.09
    assert np.asarray(Image.open(out / "recon.pgm")).shape == (3 * 30 + 2, 10 * 30 + 2)
