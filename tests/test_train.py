"""The pieces of train.py against exact expectations, in this process and on tiny synthetic data:
the settings from the command line, the learning-rate schedules the optimizer really gets, the
per-epoch loss bookkeeping, and the test loss leaving the model and the generators as they were."""

import math
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

import ae
import train
from conftest import assert_clean_error, call_main


def config_of(*argv):
    return train.make_config(train.get_parser().parse_args(["--model", *argv]))


def test_every_flag_reaches_the_config_even_when_zero():
    config = config_of("dae", "--dataset", "mnist", "--epochs", "7", "--batch-size", "33", "--lr", "0.25",
                       "--lr-schedule", "constant", "--n-components", "4", "--noise-std", "0", "--seed", "0",
                       "--train-size", "123", "--kl-warmup", "0", "--precision", "fp32-onednn", "--noise-start", "0")
    assert config == {"model": "dae", "dataset": "mnist", "epochs": 7, "batch_size": 33, "lr": 0.25,
                      "lr_schedule": "constant", "noise_start": 0.0, "kl_warmup": 0.0, "n_components": 4,
                      "noise_std": 0.0, "seed": 0, "train_size": 123, "precision": "fp32-onednn"}
    assert config_of("dae", "--seed", "-1")["seed"] == -1
    assert config_of("vae") == {"model": "vae", "dataset": "variance", "epochs": 4, "batch_size": 128, "lr": 4e-3,
                                "lr_schedule": "warmup_cosine", "noise_start": None, "kl_warmup": 0.6,
                                "n_components": 10, "noise_std": 0.2, "seed": 0, "train_size": 60000, "precision": "auto"}
    assert config_of("vae", "--kl-warmup", "0")["kl_warmup"] == 0.0  # the plain -ELBO from the first step
    assert config_of("vae", "--long")["kl_warmup"] == 0.0 and config_of("vae", "--long", "--kl-warmup", "0.3")["kl_warmup"] == 0.3
    assert config_of("bae")["kl_warmup"] == config_of("dae")["kl_warmup"] == 0.0
    # the DAE's corruption falls from 0.4 to --noise-std; with --long it stays at --noise-std throughout
    assert (config_of("dae")["noise_start"], config_of("dae")["noise_std"]) == (0.4, 0.2)
    assert config_of("dae", "--noise-std", "0.1")["noise_start"] == 0.4
    assert config_of("dae", "--long")["noise_start"] == 0.2 and config_of("dae", "--long", "--noise-std", "0.3")["noise_start"] == 0.3
    assert config_of("dae", "--long", "--noise-start", "0.5")["noise_start"] == 0.5
    assert config_of("bae")["noise_start"] is None and config_of("vae", "--long")["noise_start"] is None
    assert config_of("bae", "--long")["epochs"] == 20 and config_of("bae", "--long", "--epochs", "2")["epochs"] == 2
    # the DAE's --long is the original recipe's training length, batch, step and schedule; a flag still wins
    long_dae = config_of("dae", "--long", "--batch-size", "64", "--lr-schedule", "warmup_cosine")
    assert (long_dae["epochs"], long_dae["batch_size"], long_dae["lr"]) == (5, 64, 1e-3)
    assert long_dae["lr_schedule"] == "warmup_cosine" and config_of("dae", "--long")["lr_schedule"] == "constant"
    assert config_of("dae", "--long")["batch_size"] == 32 and config_of("vae", "--long")["batch_size"] == 128
    assert config_of("bae")["batch_size"] == 112 and config_of("bae", "--long")["batch_size"] == 128
    assert [config_of(m)["epochs"] for m in ("bae", "dae", "vae")] == [3, 5, 4]  # docs/experiments.md, "length"
    assert config_of("dae")["lr_schedule"] == config_of("vae", "--long")["lr_schedule"] == "warmup_cosine"
    assert config_of("bae")["dataset"] == "mnist" and config_of("dae")["dataset"] == "variance"


def tiny_images(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8)


def learning_rates_seen(monkeypatch):
    # The learning rate of every optimizer step, recorded as Adam takes it.
    seen = []
    step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    return seen


def test_the_optimizer_gets_warm_up_then_cosine(tmp_path, monkeypatch):
    # Oracle: the schedule written out in numpy, for every step of a 3-epoch run, recorded at each
    # optimizer step (so a schedule restarted every epoch, or stepped once an epoch, fails).
    seen = learning_rates_seen(monkeypatch)
    config = {**train.SHARED_DEFAULTS, "model": "bae", "dataset": "mnist", "epochs": 3, "batch_size": 10, "lr": 0.5}
    torch.manual_seed(0)
    train.train(ae.BottleneckAE(3), config, tiny_images(1005), tiny_images(20, 1), str(tmp_path))
    total = 3 * 100  # 100 full batches of 10 an epoch; the 5 images left over are skipped
    warmup = 6  # total // 50
    s = np.arange(total)
    expected = np.where(s < warmup, 0.5 * (s + 1) / warmup,
                        0.5 * 0.5 * (1 + np.cos(np.pi * (s - warmup) / (total - warmup))))
    assert len(seen) == total
    np.testing.assert_allclose(seen, expected, rtol=1e-12)
    assert seen[warmup - 1] == seen[warmup] == 0.5 and seen[-1] < 1e-4


def test_the_constant_schedule_keeps_the_learning_rate(tmp_path, monkeypatch):
    # Under "constant" every one of the run's steps gets config["lr"] itself.
    seen = learning_rates_seen(monkeypatch)
    config = {**train.SHARED_DEFAULTS, "model": "bae", "dataset": "mnist", "epochs": 2, "batch_size": 10, "lr": 0.25,
              "lr_schedule": "constant"}
    train.train(ae.BottleneckAE(3), config, tiny_images(205), tiny_images(20, 1), str(tmp_path))
    assert seen == [0.25] * (2 * 20)


def test_the_vae_gets_the_kl_warm_up_at_every_step_and_the_test_loss_the_plain_elbo(tmp_path, monkeypatch):
    # Oracle: the warm-up written out in numpy for every step of a 3-epoch run, as vae_loss gets it
    # (so a weight restarted every epoch, stepped once an epoch or left at 1 fails); the test loss
    # at the end of each epoch is the -ELBO itself, weight 1.
    seen = {"train": [], "test": []}
    vae_loss = ae.vae_loss

    def spy(model, x, kl_weight=1.0):
        seen["train" if model.training else "test"].append(kl_weight)
        return vae_loss(model, x, kl_weight)

    monkeypatch.setattr(ae, "vae_loss", spy)
    config = {**train.SHARED_DEFAULTS, "model": "vae", "dataset": "variance", "epochs": 3, "batch_size": 10,
              "lr": 1e-3, "kl_warmup": 0.4}
    torch.manual_seed(0)
    train.train(ae.VAE(3), config, tiny_images(205), tiny_images(20, 1), str(tmp_path))
    total = 3 * 20
    expected = np.minimum(1.0, np.arange(total) / (0.4 * total))  # 0, 1/24, ..., 1 from step 24 on
    np.testing.assert_allclose(seen["train"], expected, rtol=1e-12)
    assert seen["train"][0] == 0.0 and seen["train"][23] < 1.0 and seen["train"][24] == 1.0
    assert seen["test"] and set(seen["test"]) == {1.0}
    # without a warm-up, every step is the plain -ELBO
    seen["train"].clear()
    train.train(ae.VAE(3), {**config, "epochs": 1, "kl_warmup": 0.0}, tiny_images(205), tiny_images(20, 1),
                str(tmp_path))
    assert seen["train"] == [1.0] * 20


def test_the_daes_corruption_falls_from_noise_start_to_noise_std_and_the_test_loss_is_at_noise_std(tmp_path, monkeypatch):
    # The corruption level the DAE's loss gets at every training step, and on the test set: from
    # --noise-start at the first step, linearly, to --noise-std after the last (evenly spaced, the
    # endpoint excluded: numpy's linspace), and --noise-std for every test-loss batch.
    seen = {"train": [], "test": []}
    dae_loss = ae.dae_loss

    def spy(model, x, noise_std=0.2):
        seen["train" if model.training else "test"].append(noise_std)
        return dae_loss(model, x, noise_std)

    monkeypatch.setattr(ae, "dae_loss", spy)
    config = {**train.SHARED_DEFAULTS, "model": "dae", "dataset": "variance", "epochs": 3, "batch_size": 10,
              "lr": 1e-3, "noise_start": 0.5, "noise_std": 0.1}
    torch.manual_seed(0)
    train.train(ae.DenoisingAE(3), config, tiny_images(205), tiny_images(20, 1), str(tmp_path))
    np.testing.assert_allclose(seen["train"], np.linspace(0.5, 0.1, 3 * 20, endpoint=False), rtol=1e-12)
    assert seen["test"] and set(seen["test"]) == {0.1}
    # the same level at both ends: that level at every step
    seen["train"].clear()
    train.train(ae.DenoisingAE(3), {**config, "epochs": 1, "noise_start": 0.1}, tiny_images(205), tiny_images(20, 1),
                str(tmp_path))
    assert seen["train"] == [0.1] * 20


def test_noise_start_is_only_for_the_dae(mnist_dir, tmp_path, capsys):
    for model in ("bae", "vae"):
        proc = call_main(train.main, ["--model", model, "--noise-start", "0.4", "--data-dir", mnist_dir,
                                      "--out", tmp_path / model], capsys)
        assert_clean_error(proc, "--noise-start", "only the DAE")
        assert not (tmp_path / model).exists()


def test_kl_warmup_is_a_fraction_and_only_for_the_vae(mnist_dir, tmp_path, capsys):
    for bad in ("1.5", "-0.1", "x"):
        with pytest.raises(SystemExit):
            train.get_parser().parse_args(["--model", "vae", "--kl-warmup", bad])
    assert "between 0 and 1" in capsys.readouterr().err
    proc = call_main(train.main, ["--model", "dae", "--kl-warmup", "0.5", "--data-dir", mnist_dir,
                                  "--out", tmp_path / "dae"], capsys)
    assert_clean_error(proc, "--kl-warmup", "only the VAE")
    assert not (tmp_path / "dae").exists()


def test_each_epochs_loss_is_the_mean_over_its_steps(tmp_path, monkeypatch):
    # A loss that is 1, 2, 3, ... at successive training steps and 7 on the test set: the history
    # must hold each epoch's mean of its own steps, and 7.
    calls = []

    def fake_loss(model, x, *step):
        value = 7.0 if not model.training else float(len(calls) + 1)
        if model.training:
            calls.append(value)
        return (model(x) * 0).sum() + value

    monkeypatch.setattr(train, "loss_function", lambda config: fake_loss)
    config = {**train.SHARED_DEFAULTS, "model": "bae", "dataset": "mnist", "epochs": 2, "batch_size": 10, "lr": 1e-3}
    history = train.train(ae.BottleneckAE(3), config, tiny_images(45), tiny_images(30, 1), str(tmp_path))
    assert calls == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]  # 4 steps an epoch
    assert history["loss_history"] == [2.5, 6.5]
    assert history["step_losses"] == calls  # every step's own loss, for the training curve
    assert history["test_loss_history"] == [7.0, 7.0]
    assert history["train_seconds"] > 0
    assert history["samples_per_second"] == pytest.approx(2 * 4 * 10 / history["train_seconds"])


def test_a_resumed_run_keeps_every_steps_loss(tmp_path, monkeypatch):
    # Stopped after its first epoch and resumed from resume.pt, a run has the same per-step history
    # (and weights) as one that was never stopped.
    config = {**train.SHARED_DEFAULTS, "model": "dae", "dataset": "variance", "epochs": 3, "batch_size": 10,
              "lr": 1e-3}
    images, test = tiny_images(40), tiny_images(20, 1)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    torch.manual_seed(0)
    straight = ae.DenoisingAE(3)
    whole = train.train(straight, config, images, test, str(tmp_path / "a"))
    end_of_epoch = train.end_of_epoch

    def stop_after_the_first(*args):
        end_of_epoch(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "end_of_epoch", stop_after_the_first)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train.train(ae.DenoisingAE(3), config, images, test, str(tmp_path / "b"))
    monkeypatch.setattr(train, "end_of_epoch", end_of_epoch)
    checkpoint = torch.load(tmp_path / "b" / "resume.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and len(checkpoint["history"]["step_losses"]) == 4
    resumed_model = ae.DenoisingAE(3)
    resumed = train.train(resumed_model, config, images, test, str(tmp_path / "b"), checkpoint)
    assert len(whole["step_losses"]) == 3 * 4 and resumed["step_losses"] == whole["step_losses"]
    assert resumed["loss_history"] == whole["loss_history"]
    assert all(torch.equal(v, straight.state_dict()[k]) for k, v in resumed_model.state_dict().items())


@pytest.mark.parametrize("name", ["bae", "dae", "vae"])
def test_held_out_loss_changes_neither_the_model_nor_the_generators(name):
    torch.manual_seed(0)
    model = ae.MODELS[name](4)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm statistics included
    rng = torch.get_rng_state()
    config = {**train.SHARED_DEFAULTS, "model": name}
    dataset = "mnist" if name == "bae" else "variance"
    first = train.held_out_loss(model, train.loss_function(config), tiny_images(50), dataset, 8)
    assert math.isfinite(first)
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    # and it is one fixed draw: measured twice, the same number
    assert train.held_out_loss(model, train.loss_function(config), tiny_images(50), dataset, 8) == first


# A DAE step at batch 96 on fresh noise, six times and then ten times more, in a process of its own (the malloc setting is
# for the whole process and stays); prints the kernel's count of page faults per step, and the losses.
STEPS_AND_FAULTS = """
import resource, sys
import torch
sys.path.insert(0, {repo!r})
import ae, train
if sys.argv[1] == "keep":
    assert train.keep_freed_memory()
torch.manual_seed(0)
model = ae.DenoisingAE(10)
optimizer = torch.optim.Adam(model.parameters(), 1e-3)
losses = []
def step():
    loss = ae.dae_loss(model, torch.rand(96, 1, 28, 28) * torch.randn(96, 1, 28, 28))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
for _ in range(6):  # the first steps grow the heap to what a step needs
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 10, losses)
"""


def test_keep_freed_memory_ends_the_page_faults_of_every_step_and_changes_no_number():
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc: keep_freed_memory has nothing to tell")
    assert train.keep_freed_memory()  # glibc takes both settings
    code = STEPS_AND_FAULTS.format(repo=os.path.dirname(os.path.abspath(train.__file__)))
    runs = {}
    for arm in ("keep", "default"):
        out = subprocess.run([sys.executable, "-c", code, arm], capture_output=True, text=True, check=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1")).stdout.split(" ", 1)
        runs[arm] = float(out[0]), out[1]
    if runs["default"][0] < 500:  # 25 MB a step is some 6000 pages of 4 KB; with huge pages, fewer faults
        pytest.skip(f"this system's malloc faults {runs['default'][0]:.0f} times a step anyway")
    assert runs["keep"][0] * 20 < runs["default"][0]  # a step reuses the last step's pages (a few still fault)
    assert runs["keep"][1] == runs["default"][1]  # the same losses, to the last digit
