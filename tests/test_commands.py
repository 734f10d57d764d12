"""End-to-end runs of the real commands on real MNIST at a small size, from another folder.

One run per model (a module fixture: train.py, then its evaluation, from a cold cache of input
baselines in a folder of its own); each test below reads one behaviour of it."""

import json
import os
import re
import shlex
import types

import numpy as np
import pytest
import torch
from PIL import Image

import ae
import data
import evaluate
import train
from conftest import link_mnist, run_script

SMALL = ["--epochs", "1", "--train-size", "2000", "--batch-size", "64"]


@pytest.fixture(scope="module", params=["bae", "dae", "vae"])
def run(request, tmp_path_factory):
    """train.py --model M on 2000 images, evaluated; its folder, metrics, saved arrays and MNIST."""
    model, root = request.param, tmp_path_factory.mktemp(request.param)
    data_dir, out = link_mnist(root / "mnist"), root / "run"
    proc = run_script("train.py", "--model", model, *SMALL, "--data-dir", data_dir, "--out", out, cwd=root)
    assert proc.returncode == 0, proc.stderr
    arrays = {name: torch.as_tensor(np.load(out / f"{name}.npy"))
              for name in ("codes_train", "codes_test", "labels_train", "labels_test")}
    test_images, test_labels = data.load_mnist(data_dir, train=False)
    return types.SimpleNamespace(
        model=model, out=out, proc=proc, data_dir=data_dir, cwd=root, **arrays,
        metrics=json.loads((out / "metrics.json").read_text()),
        ckpt=torch.load(out / "model.pt", weights_only=True),
        train_images=data.load_mnist(data_dir, train=True)[0], test_images=test_images,
        first=[int(torch.nonzero(test_labels == d)[0, 0]) for d in range(10)])  # the first test image of each digit


def test_the_run_trains_and_records_what_it_was(run):
    assert "epoch   1/1" in run.proc.stdout and "Traceback" not in run.proc.stderr
    metrics = run.metrics
    assert metrics["config"]["model"] == run.model and metrics["config"]["train_size"] == 2000
    assert metrics["config"]["dataset"] == ("mnist" if run.model == "bae" else "variance")
    assert len(metrics["loss_history"]) == 1 and np.isfinite(metrics["loss_history"][0])
    assert metrics["train_seconds"] > 0 and metrics["samples_per_second"] > 0
    assert metrics["device"] == "cpu" and metrics["torch_version"] == torch.__version__
    assert run.ckpt["config"] == metrics["config"]
    assert not (run.out / "resume.pt").exists()  # a finished run leaves only its result


def test_the_probe_numbers_are_those_of_the_saved_codes(run):
    # The codes of the 2000 training images the model saw and of the 10000 test images, in MNIST's
    # order; fitting the probe again on them gives exactly the reported numbers.
    assert run.codes_train.shape == (2000, 10) and run.codes_test.shape == (10000, 10)
    assert run.labels_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert run.labels_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    metrics = run.metrics
    predict = evaluate.fit_probe(run.codes_train, run.labels_train)
    assert evaluate.accuracy(predict, run.codes_test, run.labels_test) == metrics["probe_test_accuracy"]
    assert evaluate.accuracy(predict, run.codes_train, run.labels_train) == metrics["probe_train_accuracy"]
    knn = evaluate.knn_accuracy(run.codes_train, run.labels_train, run.codes_test, run.labels_test)
    assert knn == metrics["knn_test_accuracy"]
    # with 100 and 1000 labels: the mean over five subsets of the saved training codes, drawn from the
    # labels' seed one after the other, 100s first; the pixels' with the same subsets
    gen, few = torch.Generator().manual_seed(evaluate.SEEDS["labels"]), {}
    for n in (100, 1000):
        subsets = [torch.randperm(2000, generator=gen)[:n] for _ in range(5)]
        few[str(n)] = np.mean([evaluate.accuracy(evaluate.fit_probe(run.codes_train[i], run.labels_train[i]),
                                                 run.codes_test, run.labels_test) for i in subsets])
    assert metrics["probe_few_labels"] == pytest.approx(few, rel=1e-12)
    assert set(metrics["baselines"]["pixels_few_labels"]) == {"100", "1000"}
    assert metrics["probe_few_labels"]["100"] < metrics["probe_few_labels"]["1000"]
    # even a tiny run learns something: the probe and the nearest codes beat chance (10%) clearly
    assert 0.2 < metrics["probe_test_accuracy"] <= 1 and 0.2 < metrics["probe_train_accuracy"] <= 1
    assert 0.2 < metrics["knn_test_accuracy"] <= 1
    assert np.load(run.out / "pca_test.npy").shape == (10000, 2)
    if run.model == "vae":
        assert metrics["active_units"] == int((run.codes_test.double().var(0) > 0.01).sum())


def test_the_quality_numbers_and_their_splits(run):
    metrics = run.metrics
    if run.model == "bae":
        assert 0 < metrics["test_mse"] < 0.12 and 0 < metrics["pca_test_mse"] < 0.06
    if run.model == "dae":
        # no denoiser beats the Bayes-optimal one (up to the noise of one draw)
        assert metrics["mse_over_oracle"] > 0.98 and metrics["oracle_mse"] > 0
        assert np.isclose(metrics["mse_over_oracle"], metrics["test_mse"] / metrics["oracle_mse"])
        excess = sum(metrics["excess_mse"].values())  # split by pixel, it adds up
        assert excess == pytest.approx(metrics["test_mse"] - metrics["oracle_mse"], rel=1e-5)
        assert 0.2 < metrics["probe_test_accuracy_unadapted"] <= 1  # the encoder's own BatchNorm statistics
    if run.model == "vae":
        assert metrics["test_neg_elbo"] > metrics["oracle_nll"]
        assert np.isclose(metrics["test_neg_elbo"], metrics["test_kl"] + metrics["test_nll"])
        assert sum(metrics["kl_per_dimension"]) == pytest.approx(metrics["test_kl"], rel=1e-6)
        gap = metrics["gap_to_true_model"]
        assert sum(gap.values()) == pytest.approx(metrics["test_neg_elbo"] - metrics["oracle_nll"], rel=1e-5)
        assert gap["kl"] == metrics["test_kl"]
        assert metrics["subset_size"] == 500 and metrics["is_samples"] == 100
        # -ELBO >= -log p(x) >= the true model's NLL, on the same 500 test images
        assert metrics["subset_neg_elbo"] >= metrics["test_nll_is"] > metrics["subset_oracle_nll"]


def test_the_first_codes_are_the_models_codes_of_the_first_images(run):
    # MNIST itself (BAE), or one varianceMNIST draw from the test seed's generator (VAE, whose
    # encoder is used as trained); the DAE's are those of a copy with BatchNorm statistics of clean
    # training inputs, and not its own.
    net = ae.MODELS[run.model](10).eval()
    net.load_state_dict(run.ckpt["model"])
    if run.model != "dae":
        s = run.test_images[:5].float() / 255
        gen = torch.Generator().manual_seed(evaluate.SEEDS["test"])
        x = s if run.model == "bae" else s * torch.randn(s.shape, generator=gen)
        with torch.no_grad():
            np.testing.assert_allclose(net.encode(x), run.codes_test[:5], rtol=1e-4, atol=1e-5)
    else:
        adapted = evaluate.adapted_copy(net, run.train_images[:2000], "variance", "cpu")
        own, clean = (evaluate.codes_of(m, run.test_images[:5], "variance", "cpu", evaluate.SEEDS["test"])
                      for m in (net, adapted))
        np.testing.assert_allclose(clean, run.codes_test[:5], rtol=1e-4, atol=1e-5)
        assert not np.allclose(own, run.codes_test[:5], rtol=1e-2, atol=1e-2)


def test_the_baselines_come_from_a_cold_cache_beside_mnist(run):
    # The run's own MNIST folder started with no cache: the numbers were computed for this run and
    # kept there; the untrained encoder's is the probe on the seed's initial model, its BatchNorm
    # statistics (conv encoders) from the clean training inputs.
    baselines = run.metrics["baselines"]
    pixels = {"pixels", "pixels_few_labels"} | ({"pixels_squared", "pixels_squared_few_labels"} if run.model != "bae" else set())
    assert set(baselines) == pixels | {"pca", "untrained"}
    (entry,) = json.load(open(os.path.join(run.data_dir, "MNIST", "probe-baselines.json"))).values()
    assert entry == {name: baselines[name] for name in pixels}
    if run.model == "vae":  # one conv encoder is enough: this one check costs its codes of 12000 images
        config, splits = run.metrics["config"], evaluate.load_splits(run.data_dir, 2000)
        untrained = evaluate.untrained_model(ae.VAE, config).eval()
        untrained = evaluate.adapted_copy(untrained, splits.train_images, "variance", "cpu")
        assert baselines["untrained"] == evaluate.probe_accuracy(
            *evaluate.codes_and_labels(untrained, splits, "variance", "cpu"))


def tile(picture, row, col):
    # a picture is a grid of 28x28 digits, each at (2 + 30 row, 2 + 30 column)
    return picture[2 + 30 * row: 30 + 30 * row, 2 + 30 * col: 30 + 30 * col].astype(int)


def test_the_pictures_show_the_first_test_digit_of_each_class(run):
    # recon.pgm: a row per stage, a column per digit 0-9 (the first test image of each). Row 0 is
    # MNIST itself, byte for byte; row 1 of varianceMNIST is the input x = s * e (e from the test
    # seed's generator), -1..1 shown as 0..255.
    recon = np.asarray(Image.open(run.out / "recon.pgm"))
    assert recon.shape == ({"bae": 2, "dae": 6, "vae": 5}[run.model] * 30 + 2, 10 * 30 + 2)
    assert np.array_equal(np.asarray(Image.open(run.out / "recon.png"))[:, :, 0], recon)
    images, first = run.test_images, run.first
    for d in range(10):
        assert np.array_equal(tile(recon, 0, d), images[first[d], 0].numpy()), d
    if run.model != "bae":
        s = images[first].float() / 255
        x = s * torch.randn(s.shape, generator=torch.Generator().manual_seed(evaluate.SEEDS["test"]))
        shown = np.floor(((x[:, 0] + 1) / 2).clamp(0, 1).numpy() * 255 + 0.5)
        for d in range(10):
            assert np.abs(tile(recon, 1, d) - shown[d]).max() <= 1, d
    # interpolation.pgm: pairs (0, 1), (2, 3), ...: the first digit, 10 decoded steps, the second
    inter = np.asarray(Image.open(run.out / "interpolation.pgm"))
    assert inter.shape == (5 * 30 + 2, 12 * 30 + 2)
    for r in range(5):
        assert np.array_equal(tile(inter, r, 0), images[first[2 * r], 0].numpy())
        assert np.array_equal(tile(inter, r, 11), images[first[2 * r + 1], 0].numpy())
    scatter = np.asarray(Image.open(run.out / "pca_test.ppm"))
    assert scatter.ndim == 3 and len(np.unique(scatter.reshape(-1, 3), axis=0)) > 10
    if run.model == "vae":
        assert np.asarray(Image.open(run.out / "samples.pgm")).shape == (10 * 30 + 2, 10 * 30 + 2)
        assert np.asarray(Image.open(run.out / "traversal.pgm")).shape == (10 * 30 + 2, 9 * 30 + 2)


def test_the_neighbours_picture_shows_the_nearest_training_images(run):
    # a row per digit: the test digit, then the training images of the 8 nearest codes
    # (standardised by the training codes' statistics), found here by numpy
    neighbours = np.asarray(Image.open(run.out / "neighbours.pgm"))
    assert neighbours.shape == (10 * 30 + 2, 9 * 30 + 2)
    a = run.codes_train.double().numpy()
    mean, std = a.mean(0), a.std(0, ddof=1)
    for d, i in enumerate(run.first):
        dist = ((((run.codes_test[i].double().numpy() - mean) / std) - (a - mean) / std) ** 2).sum(1)
        assert np.array_equal(tile(neighbours, d, 0), run.test_images[i, 0].numpy())
        for j, n in enumerate(np.argsort(dist, kind="stable")[:8]):
            assert np.array_equal(tile(neighbours, d, 1 + j), run.train_images[n, 0].numpy()), (d, j)



def test_the_report_and_the_curve_are_the_runs(run):
    check_report_and_curve(run.out, run.metrics, run.ckpt["history"])

def test_evaluating_again_from_a_cold_cache_reproduces_every_file(run):
    # Evaluating the saved model again, from anywhere, with the cached baselines removed too,
    # reproduces the folder byte for byte: the DAE's adapted copy, the baselines, the VAE's
    # importance sampling and pictures are deterministic
    first = {p.name: p.read_bytes() for p in run.out.iterdir() if p.name != "model.pt"}
    assert set(first) <= set(evaluate.OUTPUTS)  # what train.py removes when it replaces model.pt
    if run.model == "vae":  # the VAE writes every one of them
        assert set(first) == set(evaluate.OUTPUTS)
    for p in run.out.iterdir():
        if p.name != "model.pt":
            p.unlink()
    os.remove(os.path.join(run.data_dir, "MNIST", "probe-baselines.json"))
    proc = run_script("evaluate.py", run.out / "model.pt", "--data-dir", run.data_dir, cwd=run.cwd)
    assert proc.returncode == 0, proc.stderr
    again = {p.name: p.read_bytes() for p in run.out.iterdir() if p.name != "model.pt"}
    assert again.keys() == first.keys()
    for name in first:
        assert again[name] == first[name], name


def check_report_and_curve(out, metrics, history):
    # loss.ppm: the training curve of every step (2000 // 64 = 31), the same pixels as loss.png, drawn from
    # the losses saved beside it
    assert len(history["step_losses"]) == 31 and np.isclose(np.mean(history["step_losses"]), history["loss_history"][0])
    curve = np.asarray(Image.open(out / "loss.ppm"))
    assert curve.shape == (360, 720, 3) and np.array_equal(np.asarray(Image.open(out / "loss.png")), curve)
    assert np.load(out / "loss_train.npy").tolist() == history["step_losses"]
    assert np.load(out / "loss_test.npy").tolist() == history["test_loss_history"]
    # report.md: every picture it names is in the folder, and each picture of the folder is in it
    report = (out / "report.md").read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)
    assert links and all((out / name).exists() for name in links), links
    assert set(links) == {p.name for p in out.glob("*.png")}
    # the VAE's curve says where its KL warm-up lowers the training loss: steps 0-18 of 31 (0.6 x 31 = 18.6)
    assert ("in the first 19 steps the KL term's weight rises" in report) == (metrics["config"]["model"] == "vae")
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


def test_the_order_of_the_evaluation_steps_changes_no_file(run, tmp_path):
    # Each consumer of evaluation noise (the quality numbers, each picture, the likelihood) has a
    # generator of its own: here the pictures come first and the quality numbers after them, the
    # reverse of evaluate_checkpoint's order, and every number and picture is the same.
    if run.model == "bae":
        pytest.skip("the BAE's evaluation draws no noise")
    model, config, _ = evaluate.load_model(str(run.out / "model.pt"))
    model.eval()
    splits, parts = evaluate.load_splits(run.data_dir, config["train_size"]), evaluate.EVALUATION[run.model]
    evaluate.save_pictures(str(tmp_path), model, config, splits, (run.codes_train, run.codes_test), run.metrics, "cpu",
                           parts)
    quality = parts["quality"](model, config, splits, "cpu")
    assert quality == {k: run.metrics[k] for k in quality}
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in run.out.iterdir()
                                                  if p.name.split(".")[0] in ("recon", "interpolation", "neighbours",
                                                                              "samples", "traversal"))
    for name in os.listdir(tmp_path):
        assert (tmp_path / name).read_bytes() == (run.out / name).read_bytes(), name


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
