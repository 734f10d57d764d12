"""The input baselines as a user meets them: evaluate.cached_input_baselines, from a cold cache in a
folder of its own (MNIST's four files linked there), on the first 100 training and 300 test images."""

import json
import os

import pytest
import torch

import data
import evaluate


@pytest.fixture(scope="module")
def splits(mnist_dir):
    full = evaluate.load_splits(mnist_dir, train_size=100)
    return evaluate.Splits(full.train_images, full.train_labels, full.test_images[:300], full.test_labels[:300])


def cache_file(root):
    return os.path.join(root, "MNIST", "probe-baselines.json")


def fixed_draw(images, seed):
    # the evaluation's varianceMNIST draw, written out: x = s * e, e from a CPU generator seeded with
    # `seed`, one draw for all the images (fewer than fixed_inputs' chunks of 1000), flattened
    s = images.float() / 255
    return (s * torch.randn(s.shape, generator=torch.Generator().manual_seed(seed))).flatten(1)  # (N, 784)


def test_a_cold_cache_gives_the_probe_on_the_evaluations_inputs(cold_mnist, splits):
    # Oracle: the probe on the pixels, their squares and their PCA, on the inputs drawn here by hand
    # with the training and test seeds.
    assert not os.path.exists(cache_file(cold_mnist))
    result = evaluate.cached_input_baselines(cold_mnist, splits, "variance", 3)
    x = fixed_draw(splits.train_images, evaluate.SEEDS["train"])
    xt = fixed_draw(splits.test_images, evaluate.SEEDS["test"])
    y, yt = splits.train_labels, splits.test_labels
    assert result == {"pixels": evaluate.probe_accuracy(x, y, xt, yt, torch.float32),
                      "pixels_squared": evaluate.probe_accuracy(x * x, y, xt * xt, yt, torch.float32),
                      # 100 training images: no fewer labels than all of them
                      "pixels_few_labels": {}, "pixels_squared_few_labels": {},
                      "pca": evaluate.pca_baseline(x, y, xt, yt, 3)}
    assert result["pixels"] < result["pixels_squared"]  # the digit is in x^2
    (key,) = json.load(open(cache_file(cold_mnist)))
    assert f"train=100 test=300" in key and "variance" in key


def test_a_damaged_cache_is_computed_again(cold_mnist, splits):
    # not JSON; JSON but a list; an entry that is not a dict: the same numbers, and the file whole again
    result = evaluate.cached_input_baselines(cold_mnist, splits, "mnist", 2)
    (key,) = json.load(open(cache_file(cold_mnist)))
    for damage in (b"\x00\xff half a file", b"[1, 2, 3]", json.dumps({key: [0.5]}).encode()):
        open(cache_file(cold_mnist), "wb").write(damage)
        assert evaluate.cached_input_baselines(cold_mnist, splits, "mnist", 2) == result, damage
        assert set(json.load(open(cache_file(cold_mnist)))[key]) == {"pixels", "pixels_few_labels"}


PLANTED = 0.1234567  # no accuracy over 300 test images: a number the cache alone can hold


def plant(root):
    # Replaces every number in the cache by PLANTED: a result that holds it came from the cache.
    cache = json.load(open(cache_file(root)))
    cache = {key: {name: PLANTED for name in entry} for key, entry in cache.items()}
    open(cache_file(root), "w").write(json.dumps(cache))
    return cache


def test_the_cache_is_read_for_the_same_setting_and_only_for_it(cold_mnist, splits, monkeypatch):
    evaluate.cached_input_baselines(cold_mnist, splits, "variance", 3)
    plant(cold_mnist)
    hit = evaluate.cached_input_baselines(cold_mnist, splits, "variance", 3)
    assert hit["pixels"] == hit["pixels_squared"] == PLANTED  # a hit
    # the PCA's probe on K numbers is computed every time, for any K
    assert hit["pca"] != PLANTED and evaluate.cached_input_baselines(cold_mnist, splits, "variance", 2)["pca"] != PLANTED
    # another training set, another dataset, another version of the code: nothing is read
    fewer = evaluate.Splits(splits.train_images[:80], splits.train_labels[:80], *splits[2:])
    misses = {"train size": lambda: evaluate.cached_input_baselines(cold_mnist, fewer, "variance", 3),
              "dataset": lambda: evaluate.cached_input_baselines(cold_mnist, splits, "mnist", 3)}
    for what, call in misses.items():
        assert PLANTED not in call().values(), what
    monkeypatch.setattr(evaluate, "BASELINES_VERSION", evaluate.BASELINES_VERSION + 1)
    assert PLANTED not in evaluate.cached_input_baselines(cold_mnist, splits, "variance", 3).values(), "version"
    assert len(json.load(open(cache_file(cold_mnist)))) == 4  # one entry per setting, none overwritten


def test_an_unwritable_cache_is_computed_and_said(cold_mnist, splits, monkeypatch, capsys):
    # a read-only data folder: the numbers all the same, and a line saying they will be computed again
    def refuse(path, write):
        raise OSError(30, "Read-only file system", path)

    monkeypatch.setattr(evaluate, "atomic_write", refuse)
    result = evaluate.cached_input_baselines(cold_mnist, splits, "mnist", 2)
    assert set(result) == {"pixels", "pixels_few_labels", "pca"} and not os.path.exists(cache_file(cold_mnist))
    assert "could not write" in capsys.readouterr().out
    x, xt = (data.to_float(i).flatten(1) for i in (splits.train_images, splits.test_images))  # MNIST: x = s
    assert result == {"pixels": evaluate.probe_accuracy(x, splits.train_labels, xt, splits.test_labels, torch.float32),
                      "pixels_few_labels": {},
                      "pca": evaluate.pca_baseline(x, splits.train_labels, xt, splits.test_labels, 2)}
