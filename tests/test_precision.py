"""--precision: which arithmetic the training step uses, and that bf16 and onednn-bf16 really train.

The choice is tested with the hardware faked (cpuinfo files), so no test depends on the processor
it runs on; bf16 autocast runs on any CPU (slowly where it has no bfloat16 units), and oneDNN's
bfloat16 mode on any CPU (in float32 where oneDNN has no bfloat16 kernel), so these tests run
everywhere. What onednn-bf16 computes in, and how fast, depends on the processor, so that is
measured (tests/step_precision.py, docs/experiments.md), not tested."""

import json

import numpy as np
import pytest
import torch

import ae
import evaluate
import train
from conftest import assert_clean_error, call_main


# Linux's /proc/cpuinfo, cut to the lines the choice reads: the maker and the instruction sets
CPUINFO = {
    "intel with amx": "vendor_id : GenuineIntel\nflags : fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n",
    "intel without amx": "vendor_id : GenuineIntel\nflags : fpu avx2 avx512f avx512_bf16\n",
    "amd with avx-512": "vendor_id : AuthenticAMD\nflags : fpu avx2 avx512f avx512_bf16\n",
    "amd without avx-512": "vendor_id : AuthenticAMD\nflags : fpu avx2\n",
}


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    """fake_cpu(name): /proc/cpuinfo replaced by CPUINFO[name] for train's processor checks."""
    words = train.cpu_words

    def use(name):  # cpu_has_amx reads the processor through cpu_words too
        path = tmp_path / name.replace(" ", "-")
        path.write_text(CPUINFO[name])
        monkeypatch.setattr(train, "cpu_words", lambda cpuinfo=None: words(str(path)))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    return use


def choose(requested, device):
    return train.choose_precision(requested, torch.device(device))


@pytest.mark.parametrize("requested", ["fp32", "onednn-bf16", "bf16"])
@pytest.mark.parametrize("cpu", sorted(CPUINFO))
def test_a_precision_asked_for_is_the_one_used(requested, cpu, fake_cpu):
    fake_cpu(cpu)
    assert choose(requested, "cpu") == requested


@pytest.mark.parametrize("cpu, expected", [("intel with amx", "bf16"), ("intel without amx", "fp32"),
                                           ("amd with avx-512", "onednn-bf16"), ("amd without avx-512", "fp32")])
def test_auto_on_a_cpu_picks_bf16_with_amx_onednn_bf16_on_amd_with_avx512_else_fp32(cpu, expected, fake_cpu):
    fake_cpu(cpu)
    assert choose("auto", "cpu") == expected


def test_onednn_bf16_needs_a_torch_that_has_the_setting(fake_cpu, monkeypatch):
    # torch before 2.9 has no torch.backends.mkldnn.matmul.fp32_precision: auto falls back to fp32,
    # and asking for onednn-bf16 gets one line saying what to do
    fake_cpu("amd with avx-512")
    monkeypatch.setattr(torch.backends.mkldnn, "matmul", None, raising=False)
    assert train.onednn_settable() is False
    assert choose("auto", "cpu") == "fp32"
    with pytest.raises(train.UserError, match="torch 2.9"):
        choose("onednn-bf16", "cpu")


def test_auto_on_a_gpu_follows_its_bf16_support(fake_cpu, monkeypatch):
    fake_cpu("intel with amx")
    for supported, expected in [(True, "bf16"), (False, "fp32")]:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
        assert choose("auto", "cuda") == expected
    assert choose("auto", "mps") == "fp32"
    with pytest.raises(train.UserError, match="--precision fp32"):
        choose("bf16", "mps")
    for device in ("cuda", "mps"):  # oneDNN is the CPU's library: refused elsewhere, with what to use instead
        with pytest.raises(train.UserError, match="--precision bf16 or fp32"):
            choose("onednn-bf16", device)


def test_the_processor_is_read_from_cpuinfo_and_amx_unless_onednn_is_told_to_act_older(tmp_path, monkeypatch):
    paths = {}
    for name, text in CPUINFO.items():
        paths[name] = tmp_path / name.replace(" ", "-")
        paths[name].write_text(text)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert train.cpu_has_amx(str(paths["intel with amx"])) is True
    assert not any(train.cpu_has_amx(str(paths[name])) for name in CPUINFO if name != "intel with amx")
    assert {"AuthenticAMD", "avx512f"} <= train.cpu_words(str(paths["amd with avx-512"]))
    assert "avx512f" not in train.cpu_words(str(paths["amd without avx-512"]))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")  # allowed: as the flags say
    assert train.cpu_has_amx(str(paths["intel with amx"])) is True
    for older in ("AVX512_CORE_BF16", "avx512_core", "AVX2"):  # oneDNN then uses no AMX: auto must not pick bf16
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", older)
        assert train.cpu_has_amx(str(paths["intel with amx"])) is False
    assert train.cpu_words(str(tmp_path / "missing")) == set()  # not Linux
    assert train.cpu_has_amx(str(tmp_path / "missing")) is False


def test_the_flag_defaults_to_auto_and_reaches_the_config():
    parse = train.get_parser().parse_args
    assert train.make_config(parse(["--model", "dae"]))["precision"] == "auto"
    assert train.make_config(parse(["--model", "dae", "--precision", "bf16"]))["precision"] == "bf16"


def tiny_images(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8)


def dtypes_in_training(model):
    # The dtype of every Linear / conv output and of every loss the step computes, seen in train mode.
    seen = {"layers": set()}

    def hook(module, inputs, output):
        if module.training:
            seen["layers"].add(output.dtype)

    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            m.register_forward_hook(hook)
    return seen


@pytest.mark.parametrize("name", ["bae", "dae", "vae"])
def test_a_bf16_step_runs_the_layers_in_bf16_the_losses_in_fp32_and_trains(name, tmp_path, monkeypatch):
    losses = []
    loss_of = train.loss_function

    def spy(config):  # the loss each training step computes, as the loop gets it
        fn = loss_of(config)

        def recorded(model, x, *step):
            loss = fn(model, x, *step)
            if model.training:
                losses.append(loss.detach())
            return loss
        return recorded

    monkeypatch.setattr(train, "loss_function", spy)
    torch.manual_seed(0)
    model = ae.MODELS[name](4)
    seen = dtypes_in_training(model)
    # what the formulas are computed from: the BAE's and DAE's outputs (the DAE's x~ * mask), the
    # VAE's means and log-variances as the KL and the Gaussian likelihood get them
    formula_inputs = set()
    model.register_forward_hook(lambda module, inputs, output: formula_inputs.add(output.dtype))
    if name == "dae":  # x~ * mask is float32 even if the mask is not: look at the mask itself
        decode = model.decode
        model.decode = lambda z: formula_inputs.add(decode(z).dtype) or decode(z)
    for formula in ("kl_to_standard_normal", "gaussian_nll"):
        original = getattr(ae, formula)

        def recorded(*args, original=original, **kwargs):
            formula_inputs.update(a.dtype for a in args)
            return original(*args, **kwargs)
        monkeypatch.setattr(ae, formula, recorded)
    config = {**train.SHARED_DEFAULTS, "model": name, "dataset": "mnist" if name == "bae" else "variance",
              "epochs": 4, "batch_size": 25, "lr": 3e-3, "precision": "bf16"}
    images = tiny_images(100)
    history = train.train(model, config, images, tiny_images(20, 1), str(tmp_path))
    assert seen["layers"] == {torch.bfloat16}  # autocast on: every layer's product in bf16
    assert formula_inputs == {torch.float32} and {loss.dtype for loss in losses} == {torch.float32}  # formulas: fp32
    assert all(p.dtype == torch.float32 for p in model.parameters())  # and the weights Adam updates
    assert all(torch.isfinite(torch.tensor(h)) for h in history["loss_history"])
    # the same 100 images every epoch: the loss falls from the first epoch to the last
    assert history["loss_history"][-1] < history["loss_history"][0], history["loss_history"]


def onednn_setting():
    return torch.backends.mkldnn.matmul.fp32_precision, torch.backends.mkldnn.conv.fp32_precision


@pytest.mark.parametrize("name", ["bae", "dae", "vae"])
def test_an_onednn_bf16_step_sets_onednn_in_forward_and_backward_only_and_trains(name, tmp_path, monkeypatch):
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
    layers = dtypes_in_training(model)
    next(model.parameters()).register_hook(lambda grad: seen["backward"].add(onednn_setting()))
    config = {**train.SHARED_DEFAULTS, "model": name, "dataset": "mnist" if name == "bae" else "variance",
              "epochs": 4, "batch_size": 25, "lr": 3e-3, "precision": "onednn-bf16"}
    history = train.train(model, config, tiny_images(100), tiny_images(20, 1), str(tmp_path))
    assert seen["forward"] == seen["backward"] == {("bf16", "bf16")}
    assert seen["test loss"] == {before} and onednn_setting() == before  # plain float32 outside the steps
    assert layers["layers"] == {torch.float32}  # every tensor stays float32: oneDNN rounds inside its kernels
    assert all(torch.isfinite(torch.tensor(h)) for h in history["loss_history"])
    assert history["loss_history"][-1] < history["loss_history"][0], history["loss_history"]


def test_an_interrupted_onednn_bf16_run_puts_the_setting_back(tmp_path, monkeypatch):
    # Ctrl-C in the middle of a step: the process (a test, a notebook) goes on in plain float32
    before, calls = onednn_setting(), []

    def interrupted(model, x, *step):
        calls.append(onednn_setting())
        if len(calls) == 3:
            raise KeyboardInterrupt
        return ae.bae_loss(model, x)

    monkeypatch.setattr(train, "loss_function", lambda config: interrupted)
    config = {**train.SHARED_DEFAULTS, "model": "bae", "dataset": "mnist", "epochs": 1, "batch_size": 25,
              "lr": 1e-3, "precision": "onednn-bf16"}
    with pytest.raises(KeyboardInterrupt):
        train.train(ae.BottleneckAE(4), config, tiny_images(100), tiny_images(20, 1), str(tmp_path))
    assert calls[-1] == ("bf16", "bf16") and onednn_setting() == before


def test_fp32_on_request_never_touches_bf16(tmp_path):
    torch.manual_seed(0)
    model = ae.VAE(4)
    seen = dtypes_in_training(model)
    config = {**train.SHARED_DEFAULTS, "model": "vae", "dataset": "variance", "epochs": 1, "batch_size": 25,
              "lr": 1e-3, "precision": "fp32"}
    before = onednn_setting()
    next(model.parameters()).register_hook(lambda grad: seen["layers"].add(onednn_setting()))
    train.train(model, config, tiny_images(50), tiny_images(20, 1), str(tmp_path))
    assert seen["layers"] == {torch.float32, before}  # float32 layers, and oneDNN as it was in the backward pass


def test_the_choice_is_saved_in_metrics_json_and_resume_keeps_it(mnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--model", "bae", "--train-size", "200", "--epochs", "1", "--batch-size", "50", "--precision", "bf16",
            "--data-dir", mnist_dir, "--out", out]
    proc = call_main(train.main, args, capsys)
    assert proc.returncode == 0, proc.stderr
    assert "in bf16" in proc.stdout  # the start line says it
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["precision"] == "bf16"
    # the validation probe: fitted on the first 5/6 of the saved training codes, read on the rest
    codes, labels = (torch.from_numpy(np.load(out / f"{name}_train.npy")) for name in ("codes", "labels"))
    assert codes.shape[0] == 200
    held_out = evaluate.probe_accuracy(codes[:167], labels[:167], codes[167:], labels[167:])
    assert metrics["probe_validation_accuracy"] == held_out
    assert torch.load(out / "model.pt", weights_only=True)["config"]["precision"] == "bf16"
    # an interrupted run continues in the precision it started with; asking for another is refused
    state = torch.load(out / "model.pt", weights_only=True)
    (out / "model.pt").unlink()
    resume = {"model": state["model"], "config": state["config"], "epoch": 0, "history": state["history"]}
    opt = torch.optim.Adam(ae.BottleneckAE(10).parameters())
    resume.update(optimizer=opt.state_dict(), schedule=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1).state_dict(),
                  rng={"cpu": torch.get_rng_state(), "device": None})
    torch.save(resume, out / "resume.pt")
    proc = call_main(train.main, ["--model", "bae", "--resume", "--precision", "fp32", "--data-dir", mnist_dir,
                                  "--out", out], capsys)
    assert_clean_error(proc, "drop --precision", "precision bf16")
    parsed = train.get_parser().parse_args(["--model", "bae", "--resume", "--data-dir", mnist_dir, "--out", str(out)])
    assert train.settings(parsed)[0]["precision"] == "bf16"
    # a resume.pt from before --precision trained in float32, and one from before --kl-warmup without
    # a warm-up: each continues so
    del resume["config"]["precision"], resume["config"]["kl_warmup"]
    torch.save(resume, out / "resume.pt")
    assert train.settings(parsed)[0]["precision"] == "fp32" and train.settings(parsed)[0]["kl_warmup"] == 0.0
    # and a DAE's from before --noise-start at its one corruption level throughout, not today's falling one
    resume["config"].update(model="dae", noise_std=0.3)
    resume["config"].pop("noise_start", None)
    torch.save(resume, out / "resume.pt")
    parsed = train.get_parser().parse_args(["--model", "dae", "--resume", "--data-dir", mnist_dir, "--out", str(out)])
    assert (train.settings(parsed)[0]["noise_start"], train.settings(parsed)[0]["noise_std"]) == (0.3, 0.3)
