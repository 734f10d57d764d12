"""The probe, PCA, picture writers and atomic saves of evaluate.py, against numpy, PIL and toy
problems with known answers."""

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image  # comes with torchvision; an independent reader of PGM, PPM and PNG

import evaluate


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) + rng.standard_normal(6)
    mean, comps = evaluate.pca(torch.as_tensor(X), 3)
    Xc = X - X.mean(0)
    _, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    assert np.allclose(mean.numpy(), X.mean(0))
    for i in range(3):  # the same directions, up to the sign of each
        assert np.isclose(abs(comps[i].numpy() @ Vt[i]), 1.0)
    # the projected variances are the squared singular values / (N - 1)
    proj = (torch.as_tensor(X) - mean) @ comps.T
    assert np.allclose(proj.var(0).numpy(), S[:3] ** 2 / (len(X) - 1))
    # the sign convention: the largest entry of each component is positive
    assert all(c[c.abs().argmax()] > 0 for c in comps)


def test_probe_on_toy_problems():
    torch.manual_seed(0)
    # ten well separated clusters: a linear classifier must get them all
    centres = torch.randn(10, 5) * 10
    labels = torch.arange(10).repeat_interleave(200)
    codes = centres[labels] + torch.randn(2000, 5)
    predict = evaluate.fit_probe(codes, labels)
    assert evaluate.accuracy(predict, codes, labels) == 1.0
    test_labels = torch.arange(10).repeat_interleave(50)
    assert evaluate.accuracy(predict, centres[test_labels] + torch.randn(500, 5), test_labels) == 1.0
    # labels that the codes say nothing about: held-out accuracy near chance
    noise_labels = torch.randint(0, 10, (2000,))
    predict = evaluate.fit_probe(torch.randn(2000, 5), noise_labels)
    assert evaluate.accuracy(predict, torch.randn(2000, 5), torch.randint(0, 10, (2000,))) < 0.16
    # and it agrees with a plain numpy logistic regression on a 2-class problem that is not separable
    x = torch.randn(1000, 2, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] + torch.randn(1000, dtype=torch.float64) > 0).long()
    pred = evaluate.fit_probe(x, y, n_classes=2, l2=0.0)(x).numpy()
    w, xn, yn = np.zeros(3), np.c_[x.numpy(), np.ones(1000)], y.numpy()
    for _ in range(2000):  # gradient descent on the mean log-loss
        w -= 1.0 * xn.T @ (1 / (1 + np.exp(-xn @ w)) - yn) / 1000
    assert (pred == (xn @ w > 0)).mean() > 0.995


def test_pgm_ppm_png_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (13, 17), dtype=np.uint8)
    colour = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    evaluate.save_image(str(tmp_path / "g"), grey)
    evaluate.save_image(str(tmp_path / "c"), colour)
    assert (tmp_path / "g.pgm").read_bytes().startswith(b"P5\n17 13\n255\n")
    assert (tmp_path / "c.ppm").read_bytes().startswith(b"P6\n11 9\n255\n")
    for path, expected in [("g.pgm", grey), ("g.png", grey), ("c.ppm", colour), ("c.png", colour)]:
        assert np.array_equal(np.asarray(Image.open(tmp_path / path)), expected), path
    assert np.array_equal(evaluate.decode_pnm((tmp_path / "g.pgm").read_bytes()), grey)
    assert np.array_equal(evaluate.decode_pnm((tmp_path / "c.ppm").read_bytes()), colour)


def test_scatter_image_draws_every_class_in_its_colour():
    points = np.array([[float(d), float(d % 3)] for d in range(10)])
    img = evaluate.scatter_image(points, np.arange(10))
    plot = img[:, :480].reshape(-1, 3)
    for d in range(10):
        assert (plot == evaluate.PALETTE[d]).all(1).sum() == 9  # one 3x3 dot each


def test_atomic_write_never_leaves_half_a_file(tmp_path):
    path = str(tmp_path / "metrics.json")
    evaluate.atomic_write(path, lambda f: f.write(b"good"))

    def fails_halfway(f):
        f.write(b"half of a new fi")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        evaluate.atomic_write(path, fails_halfway)
    assert open(path, "rb").read() == b"good"
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temporary file left behind


def test_load_checkpoint_refuses_what_is_not_one(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(evaluate.CheckpointError, match="not a readable checkpoint"):
        evaluate.load_checkpoint(str(tmp_path / "notes.txt"))
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(evaluate.CheckpointError, match="not a checkpoint of train.py"):
        evaluate.load_checkpoint(str(tmp_path / "other.pt"))
    with pytest.raises(evaluate.CheckpointError, match="does not exist"):
        evaluate.load_checkpoint(str(tmp_path / "missing.pt"))
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.randn(1000)}, "config": {}}, buf)
    (tmp_path / "cut.pt").write_bytes(buf.getvalue()[:2000])
    with pytest.raises(evaluate.CheckpointError, match="not a readable checkpoint"):
        evaluate.load_checkpoint(str(tmp_path / "cut.pt"))
