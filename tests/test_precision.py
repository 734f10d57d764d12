"""--precision: which arithmetic the training step uses, and that bf16 really trains.

The choice is tested with the hardware faked (monkeypatch), so no test depends on the processor it
runs on; bf16 autocast runs on any CPU (slowly where it has no bfloat16 units), so the bf16 tests
run everywhere."""

import json

import numpy as np
import pytest
import torch

import ae
import evaluate
import train
from conftest import assert_clean_error, call_main


def choose(requested, device, amx=False, monkeypatch=None):
    monkeypatch.setattr(train, "cpu_has_amx", lambda: amx)
    return train.choose_precision(requested, torch.device(device))


@pytest.mark.parametrize("requested", ["fp32", "bf16"])
@pytest.mark.parametrize("amx", [False, True])
def test_a_precision_asked_for_is_the_one_used(requested, amx, monkeypatch):
    assert choose(requested, "cpu", amx, monkeypatch) == requested


def test_auto_picks_bf16_on_a_cpu_with_amx_and_fp32_without(monkeypatch):
    assert choose("auto", "cpu", True, monkeypatch) == "bf16"
    assert choose("auto", "cpu", False, monkeypatch) == "fp32"


def test_auto_on_a_gpu_follows_its_bf16_support(monkeypatch):
    for supported, expected in [(True, "bf16"), (False, "fp32")]:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
        assert choose("auto", "cuda", False, monkeypatch) == expected
    assert choose("auto", "mps", True, monkeypatch) == "fp32"
    with pytest.raises(train.UserError, match="--precision fp32"):
        choose("bf16", "mps", False, monkeypatch)


def test_amx_is_read_from_the_processor_flags_unless_onednn_is_told_to_act_older(tmp_path, monkeypatch):
    with_amx, without = tmp_path / "amx", tmp_path / "plain"
    with_amx.write_text("processor : 0\nflags : fpu avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n")
    without.write_text("processor : 0\nflags : fpu avx512f avx512_bf16\n")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert train.cpu_has_amx(str(with_amx)) is True and train.cpu_has_amx(str(without)) is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")  # allowed: as the flags say
    assert train.cpu_has_amx(str(with_amx)) is True
    for older in ("AVX512_CORE_BF16", "avx512_core", "AVX2"):  # oneDNN then uses no AMX: auto must not pick bf16
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", older)
        assert train.cpu_has_amx(str(with_amx)) is False
    assert train.cpu_has_amx(str(tmp_path / "missing")) is False  # not Linux


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

        def recorded(model, x):
            loss = fn(model, x)
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


def test_fp32_on_request_never_touches_bf16(tmp_path):
    torch.manual_seed(0)
    model = ae.VAE(4)
    seen = dtypes_in_training(model)
    config = {**train.SHARED_DEFAULTS, "model": "vae", "dataset": "variance", "epochs": 1, "batch_size": 25,
              "lr": 1e-3, "precision": "fp32"}
    train.train(model, config, tiny_images(50), tiny_images(20, 1), str(tmp_path))
    assert seen["layers"] == {torch.float32}


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
    # a resume.pt from before --precision trained in float32, and continues so
    del resume["config"]["precision"]
    torch.save(resume, out / "resume.pt")
    assert train.settings(parsed)[0]["precision"] == "fp32"
