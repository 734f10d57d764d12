"""Bad input and faults: one clear line and a non-zero exit, never a traceback, never a lost model.

Where the process itself matters (the exit status the shell sees, Ctrl-C, a fault injected into a
fresh interpreter, a finished run to damage) the real command runs in a subprocess. The other cases
call train.main or evaluate.main in this process with the arguments a person would type, which is
the same code path minus ~5 s of importing torch per case (test_bad_arguments_from_the_shell checks
that the script itself prints the same one line)."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import ae
import evaluate
import train
from conftest import REPO, assert_clean_error, call_main, run_script

TINY = ["--epochs", "1", "--train-size", "500", "--batch-size", "100", "--no-eval"]

BAD_ARGUMENTS = [
    (["--model", "gan"], "invalid choice: 'gan'"),
    (["--model", "bae", "--dataset", "cifar"], "invalid choice: 'cifar'"),
    (["--model", "bae", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["--model", "bae", "--epochs", "0"], "--epochs: must be positive"),
    (["--model", "bae", "--batch-size", "-3"], "--batch-size: must be positive"),
    (["--model", "bae", "--lr", "0"], "--lr: must be positive"),
    (["--model", "bae", "--lr", "nan"], "--lr: must be positive"),
    (["--model", "bae", "--n-components", "0"], "--n-components: must be positive"),
    (["--model", "dae", "--noise-std", "-0.1"], "--noise-std: must be zero or positive"),
    (["--model", "bae", "--train-size", "0"], "--train-size: must be positive"),
    (["--model", "bae", "--train-size", "60001"], "--train-size: MNIST has 60000 training images"),
    (["--model", "bae", "--epochs", "two"], "--epochs: expected an integer"),
    (["--model", "bae", "--lr", "inf"], "--lr: must be positive and finite"),
    ([], "--model"),
    (["--model", "vae", "--batch-size", "1"], "--model vae needs at least 2 images a batch"),
    (["--model", "vae", "--train-size", "1"], "needs at least 2 images a batch"),
]


@pytest.mark.parametrize("case", range(len(BAD_ARGUMENTS)), ids=[" ".join(a) or "no-args" for a, _ in BAD_ARGUMENTS])
def test_bad_arguments(case, tmp_path, capsys):
    args, needle = BAD_ARGUMENTS[case]
    out = tmp_path / "out"
    proc = call_main(train.main, [*args, "--out", out], capsys)
    assert_clean_error(proc, needle)
    assert not out.exists()  # nothing written


def test_bad_arguments_from_the_shell(tmp_path):
    proc = run_script("train.py", "--model", "gan", "--out", tmp_path / "out", cwd=tmp_path)
    assert_clean_error(proc, "invalid choice: 'gan'", "(see --help)")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_requested_without_a_gpu(tmp_path, mnist_dir, capsys):
    proc = call_main(train.main, ["--model", "bae", "--device", "cuda", "--data-dir", mnist_dir,
                                  "--out", tmp_path / "out"], capsys)
    assert_clean_error(proc, "no CUDA GPU", "--device cpu")
    assert not (tmp_path / "out").exists()
    proc = call_main(evaluate.main, [tmp_path / "model.pt", "--device", "cuda", "--data-dir", mnist_dir], capsys)
    assert_clean_error(proc, "no CUDA GPU", "--device cpu")  # evaluate.py says the same


def test_dae_trains_on_batches_of_one_and_evaluates_with_three_images(tmp_path, mnist_dir, capsys):
    # Its BatchNorm layers are all 2-D: one image still has 576 or 400 values per channel. With 3
    # training images the nearest-codes readout and picture have 3 neighbours, not 10 and 8.
    proc = call_main(train.main, ["--model", "dae", "--train-size", "3", "--batch-size", "1", "--epochs", "1",
                                  "--data-dir", mnist_dir, "--out", tmp_path / "out"], capsys)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["config"]["batch_size"] == 1
    # all 3 training images vote, digits 5, 0 and 4 one each: a tie, which goes to the smaller
    # digit, so every test image is read as a 0, right for the 980 zeros of the 10000
    assert metrics["knn_test_accuracy"] == 980 / 10000
    assert np.asarray(Image.open(tmp_path / "out" / "neighbours.pgm")).shape == (10 * 30 + 2, 4 * 30 + 2)


def test_missing_data(tmp_path, capsys, monkeypatch):
    # no MNIST there, and no network (the proxy points at a closed local port): one line naming
    # the folder and the four files
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    proc = call_main(train.main, ["--model", "bae", "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "out"],
                     capsys)
    assert_clean_error(proc, "MNIST not found in", str(tmp_path / "nowhere"), "t10k-labels-idx1-ubyte", "--data-dir")
    assert not (tmp_path / "out").exists() and not (tmp_path / "nowhere").exists()  # nothing left behind


@pytest.mark.parametrize("damage, needle", [("truncate", "is truncated or corrupt"), ("magic", "is not an MNIST file")])
def test_corrupt_data_file(damage, needle, tmp_path, mnist_dir, capsys):
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    shutil.copytree(os.path.join(mnist_dir, "MNIST", "raw"), raw)
    path = raw / "train-images-idx3-ubyte"
    blob = path.read_bytes()
    path.write_bytes(blob[:100_000] if damage == "truncate" else b"\x00\x00\x09\x09" + blob[4:])
    proc = call_main(train.main, ["--model", "bae", "--data-dir", tmp_path / "mnist", "--out", tmp_path / "out"], capsys)
    assert_clean_error(proc, "train-images-idx3-ubyte", needle)


def test_out_not_writable(tmp_path, mnist_dir, capsys):
    (tmp_path / "a-file").write_text("x")  # a folder cannot be made inside a file, even by root
    proc = call_main(train.main, ["--model", "bae", *TINY, "--data-dir", mnist_dir, "--out", tmp_path / "a-file" / "out"],
                     capsys)
    assert_clean_error(proc, "cannot write to --out")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mnist_dir):
    """A small finished bae run (training only) that the tests below try to damage."""
    out = tmp_path_factory.mktemp("finished") / "run"
    proc = run_script("train.py", "--model", "bae", *TINY, "--data-dir", mnist_dir, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_no_eval_still_writes_the_curve_and_the_report(finished_run):
    # --no-eval: no numbers, but the training curve and a report that names it and the command
    report = (finished_run / "report.md").read_text()
    assert "![loss](loss.png)" in report
    assert (finished_run / "loss.png").exists() and (finished_run / "loss.ppm").exists()
    assert "Not evaluated" in report and "python train.py --model bae --dataset mnist --epochs 1 " in report
    assert not (finished_run / "metrics.json").exists()


def test_refuses_to_overwrite_a_finished_run(finished_run, mnist_dir, capsys):
    before = (finished_run / "model.pt").read_bytes()
    proc = call_main(train.main, ["--model", "bae", *TINY, "--data-dir", mnist_dir, "--out", finished_run], capsys)
    assert_clean_error(proc, "already holds a trained model.pt", "--force")
    proc = call_main(train.main, ["--model", "bae", *TINY, "--resume", "--data-dir", mnist_dir, "--out", finished_run],
                     capsys)
    assert_clean_error(proc, "no interrupted run", "finished model")
    assert (finished_run / "model.pt").read_bytes() == before


@pytest.mark.parametrize("case", ["missing", "folder", "text", "truncated", "other-k", "torch-but-not-ours", "old"])
def test_evaluate_refuses_bad_checkpoints(case, finished_run, mnist_dir, tmp_path, capsys):
    good = finished_run / "model.pt"
    path = tmp_path / "model.pt"
    needle = {"missing": "does not exist", "folder": "is a folder", "text": "not a readable checkpoint",
              "truncated": "not a readable checkpoint", "other-k": "does not match a bae with K=5",
              "torch-but-not-ours": "not a checkpoint of train.py",
              "old": "was saved by an older version of this project; retrain it, or evaluate it with that version"}[case]
    if case == "folder":
        path = finished_run
    elif case == "text":
        path.write_text("not a model\n")
    elif case == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "other-k":
        ckpt = torch.load(good, weights_only=True)
        ckpt["config"]["n_components"] = 5
        torch.save(ckpt, path)
    elif case == "torch-but-not-ours":
        torch.save({"state_dict": {}}, path)
    elif case == "old":  # a model.pt of the version before the format version: no "format"
        ckpt = torch.load(good, weights_only=True)
        del ckpt["format"]
        torch.save(ckpt, path)
    proc = call_main(evaluate.main, [path, "--data-dir", mnist_dir], capsys)
    assert_clean_error(proc, needle)
    assert not (tmp_path / "metrics.json").exists()


def run_patched(code, tmp_path):
    """Runs train.main() in a fresh interpreter after `code` has patched something: fault injection
    without a test hook in the product."""
    prog = f"import sys; sys.path.insert(0, {REPO!r})\nimport ae, train, evaluate, torch\n{code}\nsys.exit(train.main(sys.argv[1:]))"
    return lambda *args: subprocess.run([sys.executable, "-c", prog, *map(str, args)], cwd=tmp_path,
                                        capture_output=True, text=True, timeout=600)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, mnist_dir):
    # the loss turns NaN at the 3rd step of epoch 2 (steps 1-5 are epoch 1)
    run = run_patched("""
calls = [0]
original = ae.bae_loss
def bae_loss(model, x):
    calls[0] += model.training  # count training steps, not test-loss batches
    loss = original(model, x)
    return loss * float("nan") if calls[0] == 8 else loss
ae.bae_loss = bae_loss""", tmp_path)
    out = tmp_path / "out"
    proc = run("--model", "bae", "--epochs", "3", "--train-size", "500", "--batch-size", "100", "--no-eval",
               "--data-dir", mnist_dir, "--out", out)
    assert_clean_error(proc, "became nan at epoch 2, step 3", "resume.pt", code=1)
    assert not (out / "model.pt").exists()
    state = torch.load(out / "resume.pt", weights_only=True)
    assert state["epoch"] == 1  # the end of epoch 1, the last good state
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_full_disk_while_saving_keeps_the_old_model(finished_run, tmp_path, mnist_dir):
    # --force retrains; the final save of model.pt fails halfway with ENOSPC. The old model.pt
    # must be intact and no temporary file left.
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    before = (out / "model.pt").read_bytes()
    run = run_patched("""
import errno
original = torch.save
def save(obj, f, *args, **kwargs):
    if getattr(f, "name", "").split("/")[-1].startswith("model.pt"):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")
    return original(obj, f, *args, **kwargs)
torch.save = save""", tmp_path)
    proc = run("--model", "bae", *TINY, "--force", "--data-dir", mnist_dir, "--out", out)
    assert_clean_error(proc, "No space left on device", code=1)
    assert (out / "model.pt").read_bytes() == before
    assert not [p for p in os.listdir(out) if ".tmp-" in p]


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_same_seed_same_result(tmp_path, mnist_dir):
    runs = []
    for name in ("a", "b"):
        proc = run_script("train.py", "--model", "bae", "--dataset", "variance", "--epochs", "2", "--train-size", "300",
                          "--batch-size", "50", "--no-eval", "--data-dir", mnist_dir, "--out", tmp_path / name, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        runs.append(torch.load(tmp_path / name / "model.pt", weights_only=True))
    a, b = runs
    assert a["history"]["loss_history"] == b["history"]["loss_history"]
    assert a["history"]["test_loss_history"] == b["history"]["test_loss_history"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # and another seed gives another model
    proc = run_script("train.py", "--model", "bae", "--dataset", "variance", "--epochs", "2", "--train-size", "300",
                      "--batch-size", "50", "--seed", "1", "--no-eval", "--data-dir", mnist_dir, "--out", tmp_path / "c", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert weights(tmp_path / "c" / "model.pt")["encoder.1.weight"].ne(a["model"]["encoder.1.weight"]).any()


def test_ctrl_c_saves_and_resume_matches_an_uninterrupted_run(tmp_path, mnist_dir):
    # --no-eval: the evaluation of equal weights is deterministic (test_commands re-evaluates a
    # saved model and gets the same files), so equal weights and training history are the test
    common = ["--model", "vae", "--epochs", "3", "--train-size", "3000", "--batch-size", "50", "--no-eval",
              "--data-dir", mnist_dir]
    proc = run_script("train.py", *common, "--out", tmp_path / "straight", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr

    # The interrupted run announces the 5th step of epoch 2 (60 steps an epoch) and waits there, so
    # the real SIGINT below arrives in the middle of epoch 2 however fast or slow the machine is.
    prog = f"""import sys, time; sys.path.insert(0, {REPO!r})
import ae, train
steps, original = [0], ae.vae_loss
def vae_loss(model, x, kl_weight=1.0):
    steps[0] += model.training  # training steps, not test-loss batches
    if steps[0] == 65:
        print("in epoch 2", flush=True)
        time.sleep(120)  # Ctrl-C ends the wait with KeyboardInterrupt, as it would end a step
    return original(model, x, kl_weight)
ae.vae_loss = vae_loss
sys.exit(train.main(sys.argv[1:]))"""
    out = tmp_path / "interrupted"
    child = subprocess.Popen([sys.executable, "-c", prog, *common, "--out", str(out)], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
    seen = []
    for line in child.stdout:
        seen.append(line)
        if line.startswith("in epoch 2"):
            break
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=300)
    stdout = "".join(seen) + stdout
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    assert "epoch   1/3" in stdout and "epoch   2/3" not in stdout  # stopped in the middle of epoch 2
    state = torch.load(out / "resume.pt", weights_only=True)
    assert state["epoch"] == 1  # the last finished epoch
    assert not (out / "model.pt").exists()

    proc = run_script("train.py", *common, "--resume", "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    a, b = torch.load(tmp_path / "straight" / "model.pt", weights_only=True), torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), "resumed weights differ"
    assert a["config"] == b["config"]
    for key in ("loss_history", "test_loss_history", "step_losses"):
        assert a["history"][key] == b["history"][key], key
    assert len(b["history"]["step_losses"]) == 3 * 60  # every step of the 3 epochs, the resumed one's too


def test_resume_refuses_changed_settings(tmp_path, mnist_dir, capsys):
    out = tmp_path / "out"
    out.mkdir()
    # make an interrupted run by hand: a finished tiny run's resume state is removed, so interrupt
    # a run at its very first step instead
    run = run_patched("""
import signal, os
original = ae.bae_loss
def bae_loss(model, x):
    os.kill(os.getpid(), signal.SIGINT)
    return original(model, x)
ae.bae_loss = bae_loss""", tmp_path)
    proc = run("--model", "bae", *TINY, "--data-dir", mnist_dir, "--out", out)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "--resume" in proc.stderr
    # Ctrl-C at the very first step leaves the state of the start: the seed's initial weights,
    # which are also what evaluate.py rebuilds for its "untrained" baseline
    state = torch.load(out / "resume.pt", weights_only=True)
    assert state["epoch"] == 0
    initial = evaluate.untrained_model(ae.BottleneckAE, state["config"]).state_dict()
    assert all(torch.equal(initial[k], v) for k, v in state["model"].items())
    proc = call_main(train.main, ["--model", "bae", "--resume", "--lr", "0.5", "--data-dir", mnist_dir, "--out", out],
                     capsys)
    assert_clean_error(proc, "drop --lr")
    proc = call_main(train.main, ["--model", "bae", "--resume", "--long", "--data-dir", mnist_dir, "--out", out],
                     capsys)
    assert_clean_error(proc, "drop --long", "epochs 1")  # --long asks for other epochs than the saved run's
    proc = call_main(train.main, ["--model", "bae", "--resume", "--lr-schedule", "constant", "--data-dir", mnist_dir,
                                  "--out", out], capsys)
    assert_clean_error(proc, "drop --lr-schedule", "lr_schedule warmup_cosine")
    proc = call_main(train.main, ["--model", "vae", "--resume", "--data-dir", mnist_dir, "--out", out], capsys)
    assert_clean_error(proc, "trains bae, not vae")
    proc = call_main(train.main, ["--model", "bae", *TINY, "--data-dir", mnist_dir, "--out", out], capsys)
    assert_clean_error(proc, "interrupted run", "--resume")
    # a resume.pt saved by an older version of the project: one line, and nothing written
    del state["format"]
    torch.save(state, out / "resume.pt")
    before = sorted(os.listdir(out))
    proc = call_main(train.main, ["--model", "bae", "--resume", "--data-dir", mnist_dir, "--out", out], capsys)
    assert_clean_error(proc, "resume.pt was saved by an older version of this project; retrain it")
    assert sorted(os.listdir(out)) == before
