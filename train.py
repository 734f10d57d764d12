"""Train one autoencoder, save it, and evaluate it: one command per model.

    python train.py --model bae              # bottleneck autoencoder on MNIST
    python train.py --model dae              # denoising autoencoder on varianceMNIST
    python train.py --model vae              # variational autoencoder on varianceMNIST
    python train.py --model vae --long       # the longer run behind the README's pictures
    python train.py --model bae --dataset variance   # the negative control: BAE fails there

Writes into --out (default runs/<model>-<dataset> beside this file): model.pt (the weights, the
config that rebuilds the model, the history of every step's loss), the training curve loss.ppm/.png
and report.md (even with --no-eval), then everything evaluate.py writes (metrics.json, codes, PCA,
pictures, report.md again with the numbers). While training it keeps resume.pt, the training state
at the start and after every epoch, so Ctrl-C or a crash loses at most the epoch in progress;
`--resume` continues from it.

Read it in this order: DEFAULTS (the hyperparameters), loss_function (the one switch from --model
to its loss), warmup_cosine and constant (the learning-rate schedules), noise_level (the DAE's
falling corruption), kl_weight (the VAE's KL warm-up), the note on precision (--precision bf16
and onednn-bf16), train (the loop), run (the program: data, model, training, saving, evaluation).
Below the marked line: the command line, the memory a step reuses (keep_freed_memory), the choice
of precision, checkpoints, the bookkeeping after each epoch (end_of_epoch), errors.

The training data lives on the training device as one uint8 tensor and each batch is drawn by
indexing it (and, for varianceMNIST, multiplying by fresh noise): no DataLoader, no per-image
Python, which is most of why this trains several times faster than a per-image pipeline.
"""

import argparse
import contextlib
import ctypes
import math
import os
import sys
import time

import torch

import ae
import data
import evaluate

HERE = os.path.dirname(os.path.abspath(__file__))

# The hyperparameters of each model's default run: short runs that train in a few minutes on a
# 2-core CPU; --long trains longer, for the pictures. How each was chosen, with the runs behind it,
# is in docs/experiments.md; in short:
#   epochs and batch_size: updates within the time goal (a fifth of the original
#     implementation's training time), and no more than read out better. Smaller batches give
#     more updates per epoch but cost more per image; the DAE reads out best with 4 epochs of 96
#     (of 64, 96 and 128; 5 epochs were no better), the BAE with 4 of 128, and the VAE with 4 of
#     128 too (its -ELBO lower on every seed, its probe no worse; 5 epochs no better);
#   lr: Adam's step size at the peak of the schedule (warmup_cosine), within the seeds' spread of
#     the best of several peaks compared over several seeds (one run moves noticeably with its seed;
#     the DAE's 1.8e-3, 2.5e-3 and 3.5e-3 at batch 96 read out the same);
#   noise_start: the DAE's corruption at the first step, falling to noise_std at the last
#     (noise_level below);
#   kl_warmup: the VAE's KL warm-up (kl_weight below).
# ("The original implementation" and "its recipe": ae.py's docstring.)
# "long" is what --long changes: more epochs; for the DAE the original recipe's small batches,
# small step, constant rate and constant corruption too, which is where its layout (ae.py) reads
# out best; the VAE's keeps the training its pictures were made with, without the warm-up (the
# DAE's falling corruption and the VAE's warm-up were measured on the default run only).
DEFAULTS = {
    "bae": dict(dataset="mnist", epochs=4, batch_size=128, lr=2e-3, long=dict(epochs=20)),
    "dae": dict(dataset="variance", epochs=4, batch_size=96, lr=2.5e-3, noise_start=0.4,
                long=dict(epochs=5, batch_size=32, lr=1e-3, lr_schedule="constant", noise_start=None)),
    "vae": dict(dataset="variance", epochs=4, batch_size=128, lr=4e-3, kl_warmup=0.6,
                long=dict(epochs=10, kl_warmup=0.0)),
}
# The same for every model: K, the size of the code; sigma_n, the DAE's corruption (pixel units),
# at the end of training and in its evaluation; the seed of every random draw of training; how many
# of MNIST's training images to use; the shape of the learning rate over the run (SCHEDULES); the
# DAE's corruption at the first step (None: sigma_n throughout, make_config) and the VAE's KL
# warm-up, which only they have; the arithmetic of the training step (the note on precision).
SHARED_DEFAULTS = dict(n_components=10, noise_std=0.2, seed=0, train_size=60000, lr_schedule="warmup_cosine",
                       noise_start=None, kl_warmup=0.0, precision="auto")


def loss_function(config):
    # The one switch from --model to its loss (ae.py explains each), as loss(model, x, step, total_steps).
    # Two losses change over the run: the DAE's corruption falls (noise_level below) and the VAE's KL
    # term is weighed in (kl_weight below). Without a step (the test loss), each is at its final value.
    if config["model"] == "bae":
        return lambda model, x, step=None, total_steps=None: ae.bae_loss(model, x)
    if config["model"] == "dae":
        return lambda model, x, step=None, total_steps=None: ae.dae_loss(
            model, x, noise_level(step, total_steps, config["noise_start"], config["noise_std"]))
    if config["model"] == "vae":
        return lambda model, x, step=None, total_steps=None: ae.vae_loss(
            model, x, kl_weight(step, total_steps, config["kl_warmup"]))
    raise ValueError(config["model"])


def warmup_cosine(step, total_steps):
    # The learning rate at `step`, as a fraction of its peak: a linear warm-up over the first 1/50 of
    # the steps (Adam's first steps are noisy), then a cosine decay to zero, so that the last steps
    # are small and settle into a minimum instead of rattling around it (it matters in short runs).
    warmup = max(1, total_steps // 50)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def constant(step, total_steps):
    # The original recipe's schedule: the same step size throughout. The DAE's --long trains the
    # recipe's way with it, and matches the recipe's probe; against warmup_cosine the paired seeds
    # could not tell the two apart (docs/experiments.md).
    return 1.0


SCHEDULES = {"warmup_cosine": warmup_cosine, "constant": constant}


def noise_level(step, total_steps, start, end):
    # The DAE's corruption sigma_n at `step`: falling linearly from `start` at the first step to
    # `end` (--noise-std) at the last, and `end` for the test loss and the evaluation (start = end,
    # or None: the same level throughout). A high level first makes the code hold the digit's coarse
    # shape, which even a heavily corrupted image still shows; the lower levels after it add the
    # finer strokes. The order is what counts: falling read out higher than the same levels rising,
    # or than any one level held throughout (docs/experiments.md; "Scheduled denoising
    # autoencoders", Geras and Sutton, 2015). The training loss falls with the corruption; the test
    # loss is at `end`.
    if step is None or start is None:
        return end
    return start + (end - start) * (step / total_steps)


def kl_weight(step, total_steps, warmup):
    # The VAE's KL warm-up: the weight of the -ELBO's KL term at `step`, rising linearly from 0 to 1
    # over the first `warmup` fraction of the steps, then 1 (warmup 0, or no step: 1, the plain -ELBO).
    # With the full KL from the first step, the KL pulls q(z|x) to the prior before the decoder has
    # learnt to use the code; with the weight low at first, the code carries the digit first and is
    # then pressed into shape. On the CPU it read out higher than without, and a warm-up over a
    # shorter or a longer part of the steps no better (paired seeds, the validation probe: the
    # numbers are in docs/experiments.md). The loss curve shows the weighted loss while it rises;
    # each epoch's test loss is the plain -ELBO.
    if warmup == 0 or step is None:
        return 1.0
    return min(1.0, step / (warmup * total_steps))

# Precision. With --precision bf16 the training step runs the models' matrix products and
# convolutions in bfloat16 under torch.autocast: 8 bits of mantissa instead of float32's 23, but the
# same exponent range, so no loss scaling is needed. The weights and Adam's state, BatchNorm's
# running statistics and the losses (ae.py hands the models' outputs back in float32) stay float32.
# It pays where the processor has bfloat16 matrix units (Intel's AMX, a recent GPU).
# With --precision onednn-bf16 every tensor stays float32, and torch hands the layers' matrix
# products to oneDNN (its CPU library, which runs the convolutions anyway) with oneDNN's bfloat16
# math mode allowed (torch.backends.mkldnn's fp32_precision "bf16"). Where oneDNN has bfloat16
# kernels for a product (AMX), it then rounds to bfloat16 inside it. Where it has none, as on an AMD
# EPYC, it computes in float32 (DNNL_VERBOSE=1 names each kernel it runs: all float32 there), and
# the gain is only that its kernels are faster there than MKL's, which torch uses for float32
# products by default (by how much, per model: docs/experiments.md). "auto" picks by the hardware
# (choose_precision, below the line), so the same command may train in bf16 on one machine and
# fp32 on another; the choice is saved in the config, and evaluation always computes in plain
# float32, so its numbers compare across machines.


@contextlib.contextmanager
def onednn_bf16(enabled):
    # --precision onednn-bf16 for the steps inside the `with`; the setting is put back afterwards,
    # so the test loss, evaluation and anything else in the process compute in plain float32.
    if not enabled:
        yield
        return
    backends = torch.backends.mkldnn.matmul, torch.backends.mkldnn.conv
    saved = [b.fp32_precision for b in backends]
    for b in backends:
        b.fp32_precision = "bf16"
    try:
        yield
    finally:
        for b, value in zip(backends, saved):
            b.fp32_precision = value


def train(model, config, train_images, test_images, out, checkpoint=None):
    """Adam on minibatches for config["epochs"] epochs; returns the history for metrics.json.

    Saves the training state to out/resume.pt at the start and after every epoch; `checkpoint` (a
    resume.pt read back) continues from the epoch it holds."""
    loss_fn, device = loss_function(config), train_images.device  # the loss: ae.py, chosen by --model
    # betas (0.9, 0.99): Adam's average of squared gradients spans ~100 steps instead of ~1000, so
    # the step size follows the gradients' scale in these short runs. fused: one kernel per update.
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], betas=(0.9, 0.99),
                                 fused=device.type in ("cpu", "cuda"))
    n, bs = train_images.shape[0], min(config["batch_size"], train_images.shape[0])
    steps = n // bs  # full batches only: the few images left over are seen in other epochs
    total_steps = config["epochs"] * steps
    lr_factor = SCHEDULES[config["lr_schedule"]]  # the learning rate at a step, as a fraction of config["lr"]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps))
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=config["precision"] == "bf16")
    history, start = {"loss_history": [], "test_loss_history": [], "step_losses": [], "train_seconds": 0.0}, 0
    if checkpoint is None:
        save_training_state(out, model, optimizer, schedule, config, history, epoch=0)
    else:
        history, start = restore_training_state(checkpoint, model, optimizer, schedule)

    model.train()
    for epoch in range(start, config["epochs"]):
        # the order is drawn on the CPU, so it is the same on every device: (steps, B) image indices
        batches = torch.randperm(n).to(device)[: steps * bs].view(steps, bs)
        losses, t0 = torch.zeros(steps, device=device), time.perf_counter()  # bookkeeping
        with onednn_bf16(config["precision"] == "onednn-bf16"):  # forward and backward, not the test loss
            for step in range(steps):
                x = data.make_batch(train_images[batches[step]], config["dataset"])  # (B, 1, 28, 28)
                with autocast:  # bf16 layers with --precision bf16; the loss's formulas stay float32
                    loss = loss_fn(model, x, epoch * steps + step, total_steps)  # the step: for the schedules
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()  # the learning rate for the next step
                losses[step] = loss.detach()  # bookkeeping: kept on the device, no wait for a GPU each step
        end_of_epoch(model, loss_fn, optimizer, schedule, config, history, (losses, bs, t0), epoch, test_images, out)
    history["samples_per_second"] = config["epochs"] * steps * bs / history["train_seconds"]
    return history


@torch.no_grad()
def held_out_loss(model, loss_fn, images, dataset, batch_size):
    # The training loss on the test set, over one fixed draw of its noise (varianceMNIST, the DAE's
    # corruption, the VAE's samples), so that the epochs' numbers are comparable. fork_rng puts the
    # training generators back afterwards: measuring never changes what training draws next.
    device = images.device
    model.eval()
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [0], device_type=device.type):
        torch.manual_seed(1234)
        total = 0.0
        for chunk in images.split(batch_size * 8):
            total += loss_fn(model, data.make_batch(chunk, dataset)).item() * chunk.shape[0]
    model.train()
    return total / images.shape[0]


def run(args):
    """The program: settings, data, model, training, the saved model and its evaluation."""
    config, device, out, checkpoint = settings(args)  # defaults or --resume's; checks that --out is safe
    keep_freed_memory()  # a faster step on the CPU (below the line)
    torch.manual_seed(config["seed"])  # the one place training randomness is seeded
    train_images, _ = data.load_mnist(args.data_dir, train=True, device=device)
    test_images, _ = data.load_mnist(args.data_dir, train=False, device=device)
    train_images = train_images[: config["train_size"]]
    make_out(out, args)  # only now: a mistake found above leaves no empty folder behind

    model = ae.MODELS[config["model"]](config["n_components"]).to(device)
    print(f"{config['model']} on {config['dataset']}: {sum(p.numel() for p in model.parameters()):,} "
          f"parameters, {config['epochs']} epochs of {train_images.shape[0]} images, batch "
          f"{min(config['batch_size'], train_images.shape[0])}, lr {config['lr']} ({config['lr_schedule']}), "
          + (f"corruption {config['noise_start']:g} -> {config['noise_std']:g}, "
             if config["noise_start"] not in (None, config["noise_std"]) else "")
          + f"on {device} in {config['precision']} -> {out}", flush=True)
    try:
        history = train(model, config, train_images, test_images, out, checkpoint)
    except KeyboardInterrupt:
        return interrupted(out, config)

    save_checkpoint({"model": model.state_dict(), "config": config, "history": history}, os.path.join(out, "model.pt"))
    for name in evaluate.OUTPUTS + ["resume.pt"]:  # an old evaluation no longer describes model.pt
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    evaluate.save_loss_curve(out, history, config)  # loss.ppm/.png and report.md even with --no-eval;
    evaluate.write_report(out, config, history)  # the evaluation rewrites the report with its numbers
    print(f"trained in {history['train_seconds']:.1f} s ({history['samples_per_second']:.0f} img/s); "
          f"saved {os.path.join(out, 'model.pt')}", flush=True)
    if not args.no_eval:
        try:
            evaluate.evaluate_checkpoint(os.path.join(out, "model.pt"), args.data_dir, device)
        except KeyboardInterrupt:
            print(f"interrupted during the evaluation; model.pt is saved: python evaluate.py "
                  f"{os.path.join(out, 'model.pt')} evaluates it", file=sys.stderr)
            return 130
    return 0


# =================================================================================================
# The machinery. A first reading may stop here: what follows is the command line, the checks that
# keep a run from destroying a result, the training checkpoints, and the one-line errors.
# =================================================================================================


# A mistake a person can fix; printed as one line, exit status 2. The class is evaluate.py's, so
# that a bad --device or checkpoint reads the same from both commands.
UserError = evaluate.UserError


class TrainingStopped(Exception):
    """Training cannot go on (the loss is no longer finite); printed as one line, exit status 1."""


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:  # Ctrl-C before or after training (loading data, evaluating)
        print("interrupted", file=sys.stderr)
        return 130
    except TrainingStopped as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (UserError, data.DataError, OSError) as e:  # evaluate.py's one line for each
        line, code = evaluate.error_line(e)
        # a full disk, a folder removed under us: every save is atomic, so --out still holds whole files
        print(line + ("; the last model.pt and resume.pt, if any, are whole" if isinstance(e, OSError) else ""),
              file=sys.stderr)
        return code


def get_parser():
    def per_model(key):  # "bae 3, dae 3, vae 3": each model's default, for --help
        return ", ".join(f"{model} {d[key]:g}" for model, d in DEFAULTS.items())

    def long_settings():  # "bae epochs 20; dae epochs 5, batch_size 32, lr 0.001, ...; ...", for --help
        return "; ".join(f"{model} " + ", ".join(f"{k} {v}" for k, v in d["long"].items())
                         for model, d in DEFAULTS.items())

    p = evaluate.OneLineParser(description="Train and evaluate a bottleneck, denoising or variational autoencoder.")
    p.add_argument("--model", required=True, choices=sorted(ae.MODELS), help="which autoencoder")
    p.add_argument("--dataset", choices=["mnist", "variance"],
                   help="mnist or varianceMNIST (default: mnist for bae, variance for dae and vae)")
    p.add_argument("--epochs", type=positive(int),
                   help=f"passes over the training set (default: {per_model('epochs')})")
    p.add_argument("--long", action="store_true",
                   help=f"the longer run behind the README's pictures ({long_settings()}; "
                        f"everything else as without it)")
    p.add_argument("--batch-size", type=positive(int), help=f"images per step (default: {per_model('batch_size')})")
    p.add_argument("--lr", type=positive(float),
                   help=f"Adam's learning rate: the peak of warmup_cosine, or the rate throughout with "
                        f"constant (default: {per_model('lr')})")
    p.add_argument("--lr-schedule", choices=sorted(SCHEDULES),
                   help=f"the learning rate over the run: warmup_cosine, a short warm-up then a cosine decay "
                        f"to zero; constant, the same throughout (default: {SHARED_DEFAULTS['lr_schedule']})")
    p.add_argument("--kl-warmup", type=fraction,
                   help="the VAE's KL warm-up: the KL term's weight rises from 0 to 1 over this fraction of the "
                        f"steps; 0 for none (default: vae {DEFAULTS['vae']['kl_warmup']:g}, "
                        f"{DEFAULTS['vae']['long']['kl_warmup']:g} with --long)")
    p.add_argument("--n-components", type=positive(int),
                   help=f"K, the size of the code (default: {SHARED_DEFAULTS['n_components']})")
    p.add_argument("--noise-std", type=non_negative_float,
                   help=f"std of the DAE's Gaussian corruption, in pixel units, at the last step and in the "
                        f"evaluation (default: {SHARED_DEFAULTS['noise_std']})")
    p.add_argument("--noise-start", type=non_negative_float,
                   help=f"the DAE's corruption at the first step, falling linearly to --noise-std at the last; "
                        f"the value of --noise-std for the same level throughout (default: dae "
                        f"{DEFAULTS['dae']['noise_start']:g}, --noise-std with --long)")
    p.add_argument("--seed", type=int,
                   help=f"seed of every random draw in training (default: {SHARED_DEFAULTS['seed']})")
    p.add_argument("--train-size", type=train_size,
                   help="use only the first N training images, for training and for fitting the probe "
                        "(default: all 60000)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where to compute; auto picks cuda, then mps, then cpu (default: auto)")
    p.add_argument("--precision", choices=["auto", "fp32", "onednn-bf16", "bf16"],
                   help="the training step's arithmetic: bf16 runs the layers in bfloat16 (autocast) and the "
                        "losses in float32; onednn-bf16 keeps float32 tensors and hands the matrix products to "
                        "oneDNN, allowed bfloat16 inside them (float32 where it has no bfloat16 kernel, as on "
                        "AMD); auto picks bf16 on a GPU or a CPU with AMX, onednn-bf16 on an AMD CPU with "
                        "AVX-512, else fp32; evaluation is always float32 (default: auto)")
    p.add_argument("--data-dir", default=os.path.join(HERE, "data"),
                   help="folder holding MNIST/raw; downloaded there if missing (default: data/ beside this file)")
    p.add_argument("--out", help="output folder (default: runs/<model>-<dataset> beside this file)")
    p.add_argument("--force", action="store_true",
                   help="replace a finished run in --out (only once the new one finishes)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out from its resume.pt")
    p.add_argument("--no-eval", action="store_true", help="train and save, but skip the evaluation")
    return p


def positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
        if not value > 0 or math.isinf(value):  # `not value > 0` also refuses NaN
            raise argparse.ArgumentTypeError(f"must be positive and finite, got {text}")
        return value
    return parse


def non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be zero or positive and finite, got {text}")
    return value


def fraction(text):
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def train_size(text):
    value = positive(int)(text)
    if value > 60000:
        raise argparse.ArgumentTypeError(f"MNIST has 60000 training images, got {text}")
    return value


# The settings that decide what is computed (evaluate.py's list, which rebuilds the model from
# them). They are saved in every checkpoint; --resume reads them back from there.
CONFIG_KEYS = evaluate.CONFIG_KEYS


def make_config(args):
    # A flag given on the command line wins, even when it is 0 (--noise-std 0); else the default.
    defaults = {**SHARED_DEFAULTS, **DEFAULTS[args.model]}
    if args.long:
        defaults.update(defaults["long"])
    config = {"model": args.model}
    for key in CONFIG_KEYS[1:]:
        config[key] = defaults[key] if getattr(args, key) is None else getattr(args, key)
    if config["model"] == "dae" and config["noise_start"] is None:
        config["noise_start"] = config["noise_std"]  # the same level throughout (--long)
    return config


def settings(args):
    """(config, device, out, checkpoint), every check that can fail before any data is read: the
    config from the flags (or, with --resume, the one saved in resume.pt, refusing flags that ask for
    other settings), the device, the checked --out, and resume.pt read back (None without --resume)."""
    config = make_config(args)
    if config["model"] != "dae" and config["noise_start"] is not None:
        raise UserError(f"--noise-start: only the DAE corrupts its input; drop it for --model {config['model']}")
    if config["model"] != "vae" and config["kl_warmup"] != 0:
        raise UserError(f"--kl-warmup: only the VAE's loss has a KL term; drop it for --model {config['model']}")
    if config["model"] == "vae" and min(config["batch_size"], config["train_size"]) < 2:
        # the VAE's BatchNorm1d on the 250 features has one value per image: a batch of one has no
        # variance to normalise by (the DAE's BatchNorm layers are all 2-D and work on one image)
        raise UserError("the VAE's BatchNorm on its 250 features needs at least 2 images a batch; use a "
                        "larger --batch-size (and --train-size)")
    device = evaluate.pick_device(args.device)
    config["precision"] = choose_precision(config["precision"], device)  # "auto" -> what this hardware does best
    out = check_out(args, config)
    if not args.resume:
        return config, device, out, None
    path = os.path.join(out, "resume.pt")
    checkpoint = evaluate.load_checkpoint(path, map_location="cpu")
    keys = ["optimizer", "schedule", "epoch", "history", "rng"]
    if isinstance(checkpoint.get("config"), dict):  # saved before a flag existed: what it trained with
        checkpoint["config"] = evaluate.with_old_defaults(checkpoint["config"])
    if any(k not in checkpoint for k in keys) or any(k not in checkpoint["config"] for k in CONFIG_KEYS):
        raise UserError(f"{path} is not a complete training state; start over with --force")
    saved = checkpoint["config"]
    if saved["model"] != config["model"]:
        raise UserError(f"--resume: the run in {out} trains {saved['model']}, not {config['model']}")
    # A resumed run continues with its own settings; a flag that asks for something else would be
    # silently ignored, so refuse it instead.
    for key in CONFIG_KEYS[1:]:
        if getattr(args, key) is not None:
            flag = f"--{key.replace('_', '-')}"
        elif args.long and key in DEFAULTS[config["model"]]["long"]:
            flag = "--long"
        else:
            continue  # not asked for on this command line
        if config[key] != saved[key]:
            raise UserError(f"--resume continues the run in {out} with its saved settings; "
                            f"drop {flag} (saved: {key} {saved[key]})")
    return saved, device, out, checkpoint


def keep_freed_memory():
    """Ask the C library's malloc to keep the memory a training step frees, for the next step to
    reuse; True where glibc took the setting (Linux), False elsewhere, which changes nothing else.

    Every step allocates the same tensors again (activations and gradients, tens of megabytes for
    the DAE) and frees them at its end. glibc hands large freed blocks back to the kernel
    (mmap for each block, a trimmed heap), so the next step asks for them again, and the kernel
    zeroes every 4 KB page at its first touch: thousands of page faults in every DAE and VAE step,
    a good part of the step's time (docs/experiments.md has the counts and the timings).
    Told to serve blocks under 32 MB from its heap and to trim it only past 1 GB, glibc reuses
    the same pages every step. What is computed does not change, only how long it takes; the
    process keeps its peak memory. (jemalloc or tcmalloc, preloaded with LD_PRELOAD, do the same,
    and then this changes nothing; on a GPU, PyTorch's own allocator keeps the device's memory.)"""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt  # glibc's; no such library on macOS, Windows or musl
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h; 32 MB is the largest mmap threshold
    return mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 and mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1


def choose_precision(requested, device):
    """The training step's precision for --precision on `device`: fp32, onednn-bf16 or bf16 (see
    Precision above)."""
    if requested == "bf16" and device.type == "mps":
        raise UserError("--precision bf16: this torch's autocast does not run bfloat16 on mps; use --precision fp32")
    if requested == "onednn-bf16" and device.type != "cpu":
        raise UserError(f"--precision onednn-bf16 sets oneDNN, the CPU's library; on {device.type} use "
                        f"--precision bf16 or fp32")
    if requested == "onednn-bf16" and not onednn_settable():
        raise UserError("--precision onednn-bf16 needs torch 2.9 or later (torch.backends.mkldnn.matmul."
                        "fp32_precision); use --precision fp32, or a newer torch")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and cpu_has_amx():
        return "bf16"
    if device.type == "cpu" and {"AuthenticAMD", "avx512f"} <= cpu_words() and onednn_settable():
        return "onednn-bf16"  # float32 there, in oneDNN's faster kernels (Precision above)
    return "fp32"


def onednn_settable():
    # torch.backends.mkldnn.matmul.fp32_precision came with torch 2.9; requirements.txt admits older
    return hasattr(getattr(torch.backends.mkldnn, "matmul", None), "fp32_precision")


def cpu_words(cpuinfo="/proc/cpuinfo"):
    # The words of Linux's description of the processor: its maker (vendor_id) and its flags (the
    # instruction sets it has). Empty where there is none (not Linux): float32, then.
    try:
        with open(cpuinfo) as f:
            return set(f.read().split())
    except OSError:
        return set()


def cpu_has_amx(cpuinfo="/proc/cpuinfo"):
    # Intel's AMX tile units multiply bfloat16 matrices several times faster than float32. Linux lists
    # them among the processor's flags; oneDNN, which runs torch's CPU matmuls and convolutions, can
    # be told to act as an older processor (ONEDNN_MAX_CPU_ISA=AVX512_CORE, say), and then has none.
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if limit not in ("ALL", "DEFAULT") and "AMX" not in limit:
        return False
    return "amx_bf16" in cpu_words(cpuinfo)


def check_out(args, config):
    """The output folder, after making sure this run will not destroy a result in it."""
    out = args.out or os.path.join(HERE, "runs", f"{config['model']}-{config['dataset']}")
    finished = os.path.exists(os.path.join(out, "model.pt"))
    resumable = os.path.exists(os.path.join(out, "resume.pt"))
    if args.resume and not resumable:
        raise UserError(f"--resume: there is no interrupted run in {out} (no resume.pt)"
                        + ("; it holds a finished model" if finished else ""))
    if not args.resume and not args.force:
        if finished:
            raise UserError(f"{out} already holds a trained model.pt; pass --force to replace it "
                            f"once the new run finishes, or choose another --out")
        if resumable:
            raise UserError(f"{out} holds an interrupted run (resume.pt); pass --resume to continue "
                            f"it or --force to start over")
    return out


def make_out(out, args):
    # Find out now, not after an hour of training, whether the results can be saved.
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise UserError(f"cannot write to --out {out}: {e.strerror}; choose another --out") from None
    if args.force and not args.resume and os.path.exists(os.path.join(out, "resume.pt")):
        os.remove(os.path.join(out, "resume.pt"))  # --force over an interrupted run: start over


def save_checkpoint(obj, path):
    # Written to a temporary file and renamed into place: a crash, Ctrl-C or a full disk leaves the
    # old file or the new one, never half of one (evaluate.atomic_write).
    evaluate.atomic_write(path, lambda f: torch.save(obj, f))


def save_training_state(out, model, optimizer, schedule, config, history, epoch):
    # Everything the loop needs to go on from the start of `epoch` exactly as if it had never
    # stopped, the random generators included (the next epoch's batch order, noise and samples).
    save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "schedule": schedule.state_dict(), "config": config, "epoch": epoch,
                     "history": history, "rng": rng_state(next(model.parameters()).device)},
                    os.path.join(out, "resume.pt"))


def restore_training_state(checkpoint, model, optimizer, schedule):
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
        set_rng_state(checkpoint["rng"], next(model.parameters()).device)
        checkpoint["history"].setdefault("step_losses", [])  # a resume.pt from before they were kept
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"resume.pt does not fit this model and optimizer ({str(e).splitlines()[0][:120]}); "
                        f"start over with --force") from None
    return checkpoint["history"], checkpoint["epoch"]


def rng_state(device):
    # The generators training draws from: the CPU's (batch order) and the device's (noise, samples).
    state = {"cpu": torch.get_rng_state(), "device": None}
    if device.type == "cuda":
        state["device"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        state["device"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state["device"] is not None:
        torch.cuda.set_rng_state(state["device"], device)
    elif device.type == "mps" and state["device"] is not None:
        torch.mps.set_rng_state(state["device"])


def end_of_epoch(model, loss_fn, optimizer, schedule, config, history, epoch_record, epoch, test_images, out):
    # The bookkeeping after each epoch: stop if the loss is not finite, record the epoch's mean
    # loss, each step's loss, the test loss and the time, save the training state for --resume, print one line.
    losses, bs, t0 = epoch_record  # each step's loss (on the device), the batch size, the epoch's start
    losses = losses.cpu()  # waits for the last step, so the time is right on a GPU too
    seconds = time.perf_counter() - t0
    stop_if_not_finite(losses, epoch, out)
    history["loss_history"].append(losses.double().mean().item())
    history["step_losses"] += losses.tolist()  # every step's loss, for the training curve (loss.ppm)
    history["test_loss_history"].append(held_out_loss(model, loss_fn, test_images, config["dataset"], bs))
    history["train_seconds"] += seconds
    save_training_state(out, model, optimizer, schedule, config, history, epoch=epoch + 1)
    print(f"epoch {epoch + 1:3d}/{config['epochs']}  train loss {history['loss_history'][-1]:10.4f}  "
          f"test loss {history['test_loss_history'][-1]:10.4f}  {seconds:6.1f} s  "
          f"{losses.shape[0] * bs / seconds:7.0f} img/s", flush=True)


def stop_if_not_finite(losses, epoch, out):
    # Checked once an epoch, not every step, to keep the loop free of host syncs; resume.pt still
    # holds the state before the epoch that went wrong.
    bad = torch.nonzero(~torch.isfinite(losses))
    if len(bad):
        step = bad[0, 0].item()
        raise TrainingStopped(f"the training loss became {losses[step].item()} at epoch {epoch + 1}, step "
                              f"{step + 1}; the last good training state is in {os.path.join(out, 'resume.pt')}. "
                              f"Start over with --force and a smaller --lr.")


def interrupted(out, config):
    path = os.path.join(out, "resume.pt")
    if not os.path.exists(path):  # Ctrl-C before the first save
        print("interrupted", file=sys.stderr)
    else:
        print(f"interrupted: {path} holds the training state of the last finished epoch (or of the "
              f"start); continue with: python train.py --model {config['model']} --out {out} --resume",
              file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
