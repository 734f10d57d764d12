"""MNIST loading and varianceMNIST statistics, on the real MNIST files."""

import os
import shutil

import pytest
import torch

import data


def test_mnist_is_the_real_thing(mnist_dir):
    images, labels = data.load_mnist(mnist_dir, train=True)
    assert images.shape == (60000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    s = data.to_float(images)
    assert abs(s.mean().item() - 0.1307) < 1e-4 and abs(s.std().item() - 0.3081) < 1e-4
    test_images, test_labels = data.load_mnist(mnist_dir, train=False)
    assert test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_variance_batch_statistics(mnist_dir):
    # x = s * e: mean 0 and variance s^2 in every pixel. 2000 draws of 20 digits; the standard error
    # of a variance estimate from n normal samples is var * sqrt(2 / n).
    images, _ = data.load_mnist(mnist_dir, train=False)
    s = data.to_float(images[:20])
    torch.manual_seed(0)
    draws = torch.stack([data.make_batch(images[:20], "variance") for _ in range(2000)])  # (2000, 20, 1, 28, 28)
    mean, var = draws.mean(0), draws.var(0)
    assert torch.all(mean.abs() <= 5 * s / 2000 ** 0.5 + 1e-7)
    assert torch.all((var - s ** 2).abs() <= 5 * s ** 2 * (2 / 2000) ** 0.5 + 1e-7)
    assert torch.all(draws[:, s == 0] == 0)  # the background is exactly 0
    # a new draw every read
    assert not torch.equal(data.make_batch(images[:20], "variance"), data.make_batch(images[:20], "variance"))
    # and MNIST itself is just the intensities
    assert torch.equal(data.make_batch(images[:20], "mnist"), s)


def test_dataset_form_gives_the_same_distribution(mnist_dir):
    ds = data.variance_mnist_dataset(mnist_dir, train=False)
    torch.manual_seed(1)
    first, label = ds[0]
    assert first.shape == (1, 28, 28) and label == 7
    assert not torch.equal(first, ds[0][0])  # fresh noise on every read
    s = data.to_float(data.load_mnist(mnist_dir, train=False)[0][0])
    draws = torch.stack([ds[0][0] for _ in range(3000)])
    var = draws.var(0)
    assert torch.all((var - s ** 2).abs() <= 5 * s ** 2 * (2 / 3000) ** 0.5 + 1e-6)
    assert torch.all(draws[:, s == 0] == 0)


def copy_mnist(mnist_dir, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.MNIST_FILES:
        shutil.copy(os.path.join(mnist_dir, "MNIST", "raw", name), raw / name)
    return raw


def test_truncated_file_is_named(mnist_dir, tmp_path):
    raw = copy_mnist(mnist_dir, tmp_path)
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte is truncated or corrupt"):
        data.load_mnist(str(tmp_path), train=False)


def test_wrong_magic_is_named(mnist_dir, tmp_path):
    raw = copy_mnist(mnist_dir, tmp_path)
    path = raw / "train-labels-idx1-ubyte"
    blob = bytearray(path.read_bytes())
    blob[3] = 7
    path.write_bytes(bytes(blob))
    with pytest.raises(data.DataError, match="train-labels-idx1-ubyte is not an MNIST file"):
        data.load_mnist(str(tmp_path), train=True)
