"""--precision: which kernels the training step uses, and that fp32-onednn really trains in float32.

The choice is tested with the processor faked (a cpuinfo file and torch's kernel level), so no test
depends on the processor it runs on; oneDNN's setting works on any CPU. How fast each choice is, is
measured (tools/levers.py, docs/experiments.md), not tested."""

import json

import numpy as np
import pytest
import torch

import ae
import evaluate
import train
from conftest import assert_clean_error, call_main

# Linux's /proc/cpuinfo, cut to the lines the choice reads, and the kernels torch uses there
CPUS = {
    "amd with avx-512": ("vendor_id : AuthenticAMD\nflags : fpu avx2 avx512f avx512_bf16\n", "AVX512"),
    "amd without avx-512": ("vendor_id : AuthenticAMD\nflags : fpu avx2\n", "AVX2"),
    "amd with avx-512, torch limited to avx2": ("vendor_id : AuthenticAMD\nflags : fpu avx2 avx512f\n", "AVX2"),
    "intel with avx-512": ("vendor_id : GenuineIntel\nflags : fpu avx2 avx512f avx512_bf16 amx_bf16\n", "AVX512"),
    "not linux": (None, "AVX2"),
}


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    """fake_cpu(name): /proc/cpuinfo and torch's kernel level replaced by CPUS[name]'s."""
    words = train.cpu_words

    def use(name):
        text, capability = CPUS[name]
        path = tmp_path / name.replace(" ", "-")
        if text is not None:
            path.write_text(text)
        monkeypatch.setattr(train, "cpu_words", lambda cpuinfo=None: words(str(path)))
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    return use


def choose(requested, device):
    return train.choose_precision(requested, torch.device(device))


@pytest.mark.parametrize("cpu, expected", [("amd with avx-512", "fp32-onednn"), ("amd without avx-512", "fp32"),
                                           ("amd with avx-512, torch limited to avx2", "fp32"),
                                           ("intel with avx-512", "fp32"), ("not linux", "fp32")])
def test_auto_picks_fp32_onednn_on_amd_with_avx512_else_fp32(cpu, expected, fake_cpu):
    fake_cpu(cpu)
    assert choose("auto", "cpu") == expected
    for requested in ("fp32", "fp32-onednn"):  # a precision asked for is the one used
        assert choose(requested, "cpu") == requested


def test_off_the_cpu_auto_is_fp32_and_onednn_is_refused(fake_cpu):
    fake_cpu("amd with avx-512")
    for device in ("cuda", "mps"):
        assert choose("auto", device) == "fp32"
        with pytest.raises(train.UserError, match="oneDNN, the CPU.s library; on .* use fp32"):
            choose("fp32-onednn", device)


def test_the_processor_is_read_from_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUS["amd with avx-512"][0])
    assert {"AuthenticAMD", "avx512f"} <= train.cpu_words(str(path))
    assert train.cpu_words(str(tmp_path / "missing")) == set()  # not Linux


def tiny_images(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8)


def onednn_setting():
    return torch.backends.mkldnn.matmul.fp32_precision, torch.backends.mkldnn.conv.fp32_precision


def layer_dtypes(model):
    # the dtype of every Linear / conv output computed in train mode
    seen = set()

    def hook(module, inputs, output):  # returns None: the output stays as it is
        if module.training:
            seen.add(output.dtype)

    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            m.register_forward_hook(hook)
    return seen


@pytest.mark.parametrize("name", ["bae", "dae", "vae"])
def test_fp32_onednn_sets_onednn_in_forward_and_backward_only_and_trains(name, tmp_path, monkeypatch):
    # oneDNN's setting as each training step's loss is computed, as its gradient reaches the first
    # layer (the end of the backward pass) and as the test loss is computed; and afterwards
    seen = {"forward": set(), "backward": set(), "test loss": set()}
    loss_of = train.loss_function

    def spy(config):
        fn = loss_of(config)

        def recorded(model, x, *step):
            seen["forward" if model.training else "test loss"].add(onednn_setting())
            return fn(model, x, *step)
        return recorded

    monkeypatch.setattr(train, "loss_function", spy)
    before = onednn_setting()
    torch.manual_seed(0)
    model = ae.MODELS[name](4)
    layers = layer_dtypes(model)
    next(model.parameters()).register_hook(lambda grad: seen["backward"].add(onednn_setting()))
    config = {**train.SHARED_DEFAULTS, "model": name, "dataset": "mnist" if name == "bae" else "variance",
              "epochs": 4, "batch_size": 25, "lr": 3e-3, "precision": "fp32-onednn"}
    history = train.train(model, config, tiny_images(100), tiny_images(20, 1), str(tmp_path))
    assert seen["forward"] == seen["backward"] == {("bf16", "bf16")}
    assert seen["test loss"] == {before} and onednn_setting() == before  # as before outside the steps
    assert layers == {torch.float32}  # every tensor stays float32
    assert all(np.isfinite(history["loss_history"]))
    # the same 100 images every epoch: the loss falls from the first epoch to the last
    assert history["loss_history"][-1] < history["loss_history"][0], history["loss_history"]


def test_an_interrupted_fp32_onednn_run_puts_the_setting_back(tmp_path, monkeypatch):
    # Ctrl-C in the middle of a step: the process (a test, a notebook) goes on as before
    before, calls = onednn_setting(), []

    def interrupted(model, x, *step):
        calls.append(onednn_setting())
        if len(calls) == 3:
            raise KeyboardInterrupt
        return ae.bae_loss(model, x)

    monkeypatch.setattr(train, "loss_function", lambda config: interrupted)
    config = {**train.SHARED_DEFAULTS, "model": "bae", "dataset": "mnist", "epochs": 1, "batch_size": 25,
              "lr": 1e-3, "precision": "fp32-onednn"}
    with pytest.raises(KeyboardInterrupt):
        train.train(ae.BottleneckAE(4), config, tiny_images(100), tiny_images(20, 1), str(tmp_path))
    assert calls[-1] == ("bf16", "bf16") and onednn_setting() == before


def test_fp32_never_touches_onednn(tmp_path):
    torch.manual_seed(0)
    model = ae.VAE(4)
    layers, setting = layer_dtypes(model), set()
    config = {**train.SHARED_DEFAULTS, "model": "vae", "dataset": "variance", "epochs": 1, "batch_size": 25,
              "lr": 1e-3, "precision": "fp32"}
    before = onednn_setting()
    next(model.parameters()).register_hook(lambda grad: setting.add(onednn_setting()))
    train.train(model, config, tiny_images(50), tiny_images(20, 1), str(tmp_path))
    assert layers == {torch.float32} and setting == {before}


def test_the_choice_is_saved_in_metrics_json_and_resume_keeps_it(mnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--model", "bae", "--train-size", "200", "--epochs", "1", "--batch-size", "50", "--precision",
            "fp32-onednn", "--data-dir", mnist_dir, "--out", out]
    proc = call_main(train.main, args, capsys)
    assert proc.returncode == 0, proc.stderr
    assert "in fp32-onednn" in proc.stdout  # the start line says it
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["precision"] == "fp32-onednn"
    # the validation probe: fitted on the first 5/6 of the saved training codes, read on the rest
    codes, labels = (torch.from_numpy(np.load(out / f"{name}_train.npy")) for name in ("codes", "labels"))
    assert codes.shape[0] == 200
    held_out = evaluate.probe_accuracy(codes[:167], labels[:167], codes[167:], labels[167:])
    assert metrics["probe_validation_accuracy"] == held_out
    # an interrupted run continues in the precision it started with; asking for another is refused
    state = torch.load(out / "model.pt", weights_only=True)
    (out / "model.pt").unlink()
    opt = torch.optim.Adam(ae.BottleneckAE(10).parameters())
    resume = {**state, "epoch": 0, "optimizer": opt.state_dict(), "rng": {"cpu": torch.get_rng_state(), "device": None},
              "schedule": torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1).state_dict()}
    torch.save(resume, out / "resume.pt")
    proc = call_main(train.main, ["--model", "bae", "--resume", "--precision", "fp32", "--data-dir", mnist_dir,
                                  "--out", out], capsys)
    assert_clean_error(proc, "drop --precision", "precision fp32-onednn")
    parsed = train.get_parser().parse_args(["--model", "bae", "--resume", "--data-dir", mnist_dir, "--out", str(out)])
    assert train.settings(parsed)[0]["precision"] == "fp32-onednn"
