"""Train one autoencoder, save it, and evaluate it: one command per model.

    python train.py --model bae              # bottleneck autoencoder on MNIST
    python train.py --model dae              # denoising autoencoder on varianceMNIST
    python train.py --model vae              # variational autoencoder on varianceMNIST
    python train.py --model vae --long       # the longer run behind the README's pictures
    python train.py --model bae --dataset variance   # the negative control: BAE fails there

Writes into --out (default runs/<model>-<dataset>): model.pt (weights, config, every step's loss),
the training curve, report.md, then what evaluate.py writes; while training, resume.pt (the state
after every epoch), so Ctrl-C loses at most one epoch and --resume goes on. Read in this order:
TRAINING (each model's data, defaults and loss: the one switch on --model), the schedules,
noise_level, kl_weight, train (the loop), run. The training images live on the device as one uint8
tensor, a batch drawn by indexing it: no per-image Python, several times faster than a DataLoader.
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

# Each model's training in one place: its data, its default run (minutes on a 2-core CPU), what --long
# changes, its loss at a step (ae.py explains each); a setting only one model has is refused for the
# others. epochs, batch_size, lr (Adam's peak): what reads out best within a fifth of the original's
# training time (docs/experiments.md); the DAE's --long is the original's own training.
TRAINING = {
    "bae": dict(dataset="mnist", epochs=3, batch_size=112, lr=2e-3, long=dict(epochs=20, batch_size=128),
                loss=lambda model, x, config, step, total: ae.bae_loss(model, x)),
    "dae": dict(dataset="variance", epochs=5, batch_size=96, lr=2.5e-3, noise_start=0.4,
                long=dict(epochs=5, batch_size=32, lr=1e-3, lr_schedule="constant", noise_start=None),
                loss=lambda model, x, config, step, total: ae.dae_loss(
                    model, x, noise_level(step, total, config["noise_start"], config["noise_std"]))),
    "vae": dict(dataset="variance", epochs=4, batch_size=128, lr=4e-3, kl_warmup=0.6,
                long=dict(epochs=10, kl_warmup=0.0), min_batch=2,  # BatchNorm on 250 features: 2 images a batch
                loss=lambda model, x, config, step, total: ae.vae_loss(
                    model, x, kl_weight(step, total, config["kl_warmup"]))),
}
# The same for every model: K, the size of the code; sigma_n, the DAE's corruption (pixel units) at its
# last step and in its evaluation; the seed; how many training images; the rate's shape; the arithmetic.
SHARED_DEFAULTS = dict(n_components=10, noise_std=0.2, seed=0, train_size=60000, lr_schedule="warmup_cosine",
                       noise_start=None, kl_warmup=0.0, precision="auto")


def loss_function(config):
    # loss(model, x, step, total_steps); without a step (the test loss) at its last step's settings
    loss = TRAINING[config["model"]]["loss"]
    return lambda model, x, step=None, total_steps=None: loss(model, x, config, step, total_steps)


def warmup_cosine(step, total_steps):
    # The learning rate at `step`, a fraction of its peak: a linear warm-up over the first 1/50 of the
    # steps (Adam's first are noisy), then a cosine decay to zero: small last steps settle in a minimum.
    warmup = max(1, total_steps // 50)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def constant(step, total_steps):
    return 1.0  # the original implementation's schedule: the same step size throughout (the DAE's --long)


SCHEDULES = {"warmup_cosine": warmup_cosine, "constant": constant}


def noise_level(step, total_steps, start, end):
    # The DAE's corruption sigma_n at `step`: falling linearly from `start` to `end` (--noise-std) at the
    # last step, `end` for the test loss and the evaluation (and throughout if start is None). Heavy
    # corruption first leaves only a digit's coarse shape to encode; lighter levels then add the strokes
    # to a code organised by shape ("Scheduled denoising autoencoders", Geras and Sutton, 2015).
    if step is None or start is None:
        return end
    return start + (end - start) * (step / total_steps)


def kl_weight(step, total_steps, warmup):
    # The VAE's KL warm-up: the weight of the -ELBO's KL term at `step`, rising linearly from 0 to 1 over
    # the first `warmup` fraction of the steps (0, or no step: the plain -ELBO). A full KL from the first
    # step pulls q(z|x) to the prior before the decoder has learnt to use the code; a low weight first
    # lets the code carry the digit, then the KL presses it into shape.
    if warmup == 0 or step is None:
        return 1.0
    return min(1.0, step / (warmup * total_steps))


def train(model, config, train_images, test_images, out, checkpoint=None):
    """Adam on minibatches for config["epochs"] epochs (from a resume.pt's, `checkpoint`); the history."""
    loss_fn, device = loss_function(config), train_images.device
    # betas (0.9, 0.99): Adam's average of squared gradients spans ~100 steps instead of ~1000, so
    # the step size follows the gradients' scale in these short runs. fused: one kernel per update.
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], betas=(0.9, 0.99),
                                 fused=device.type in ("cpu", "cuda"))
    n, bs = train_images.shape[0], min(config["batch_size"], train_images.shape[0])
    steps = n // bs  # full batches only: the few images left over are seen in other epochs
    total_steps, lr_factor = config["epochs"] * steps, SCHEDULES[config["lr_schedule"]]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps))
    history, start = start_or_resume(out, model, optimizer, schedule, config, checkpoint)
    model.train()
    for epoch in range(start, config["epochs"]):
        # the order is drawn on the CPU, so it is the same on every device: (steps, B) image indices
        batches = torch.randperm(n).to(device)[: steps * bs].view(steps, bs)
        losses, t0 = torch.zeros(steps, device=device), time.perf_counter()
        with faster_step(config):  # how this machine computes a step fastest, not what (below the line)
            for step in range(steps):
                x = data.make_batch(train_images[batches[step]], config["dataset"])  # (B, 1, 28, 28)
                loss = loss_fn(model, x, epoch * steps + step, total_steps)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()  # the learning rate for the next step
                losses[step] = loss.detach()  # kept on the device: no wait for a GPU at every step
        end_of_epoch(model, loss_fn, optimizer, schedule, config, history, (losses, bs, t0), epoch, test_images, out)
    history["samples_per_second"] = config["epochs"] * steps * bs / history["train_seconds"]
    return history


@torch.no_grad()
def held_out_loss(model, loss_fn, images, dataset, batch_size):
    # The loss on the test set, over one fixed draw of its noise, so that the epochs' numbers compare;
    # fork_rng puts the training generators back: measuring never changes what training draws next.
    model.eval()
    with torch.random.fork_rng(devices=[] if images.device.type == "cpu" else [0], device_type=images.device.type):
        torch.manual_seed(1234)
        total = sum(loss_fn(model, data.make_batch(chunk, dataset)).item() * chunk.shape[0]
                    for chunk in images.split(batch_size * 8))
    model.train()
    return total / images.shape[0]


def run(args):
    """The program: settings, data, model, training, the saved model and its evaluation."""
    config, device, out, checkpoint = settings(args)  # defaults or --resume's; checks that --out is safe
    torch.manual_seed(config["seed"])  # the one place training randomness is seeded
    train_images = data.load_mnist(args.data_dir, train=True, device=device)[0][: config["train_size"]]
    test_images, _ = data.load_mnist(args.data_dir, train=False, device=device)
    make_out(out, args)  # only now: a mistake found above leaves no empty folder behind

    model = ae.MODELS[config["model"]](config["n_components"]).to(device)
    print(first_line(config, model, len(train_images), device, out), flush=True)
    try:
        history = train(model, config, train_images, test_images, out, checkpoint)
    except KeyboardInterrupt:
        return interrupted(out, config)

    save_checkpoint({"model": model.state_dict(), "config": config, "history": history}, os.path.join(out, "model.pt"))
    for name in evaluate.OUTPUTS + ["resume.pt"]:  # an old evaluation no longer describes model.pt
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    # the training curve and report.md even with --no-eval; the evaluation rewrites the report
    evaluate.write_report(out, config, history, captions=evaluate.save_loss_curve(out, history, config))
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
# The machinery. A first reading may stop here: the command line, the checks that keep a run from
# destroying a result, checkpoints, one-line errors, and the settings that make a step faster.
# =================================================================================================

UserError = evaluate.UserError  # a mistake a person can fix: one line, exit status 2, as in evaluate.py


def first_line(c, model, n, device, out):  # what is about to run: the model, the data, the settings, where
    corruption = f"corruption {c['noise_start']:g} -> {c['noise_std']:g}, " if c["noise_start"] is not None else ""
    return (f"{c['model']} on {c['dataset']}: {sum(p.numel() for p in model.parameters()):,} parameters, {c['epochs']} "
            f"epochs of {n} images, batch {min(c['batch_size'], n)}, lr {c['lr']} ({c['lr_schedule']}), "
            f"{corruption * (c['noise_start'] != c['noise_std'])}on {device} in {c['precision']} -> {out}")


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
    except (UserError, data.DataError, OSError) as e:  # evaluate.py's one line for each; every save is
        line, code = evaluate.error_line(e)  # atomic, so after a full disk --out still holds whole files
        print(line + "; the last model.pt and resume.pt, if any, are whole" * isinstance(e, OSError), file=sys.stderr)
        return code


def get_parser():
    def default(key, long=""):  # "(default: bae 3, dae 5, vae 4)": each model's default, or the shared one
        per_model = ", ".join(f"{m} {t[key]:g}" for m, t in TRAINING.items() if key in t)
        return f"(default: {per_model or SHARED_DEFAULTS[key]}{long})"

    p = evaluate.OneLineParser(description="Train and evaluate a bottleneck, denoising or variational autoencoder.")
    add, positive, zero_or_positive = p.add_argument, number(), number(zero=True)
    add("--model", required=True, choices=sorted(ae.MODELS), help="which autoencoder")
    add("--dataset", choices=["mnist", "variance"], help="MNIST or varianceMNIST (default: mnist for bae, else "
        "variance)")
    add("--epochs", type=number(int), help=f"passes over the training set {default('epochs')}")
    add("--long", action="store_true", help="the longer run behind the README's pictures (" + "; ".join(
        f"{m} " + ", ".join(f"{k} {v}" for k, v in t["long"].items()) for m, t in TRAINING.items()) + ")")
    add("--batch-size", type=number(int), help=f"images per step {default('batch_size')}")
    add("--lr", type=positive, help=f"Adam's learning rate: the peak of warmup_cosine, or constant's {default('lr')}")
    add("--lr-schedule", choices=sorted(SCHEDULES), help=f"warmup_cosine: a short warm-up, then a cosine decay to "
        f"zero; constant {default('lr_schedule')}")
    add("--kl-warmup", type=number(at_most=(1, "must be between 0 and 1"), zero=True), help="the VAE's KL term's "
        f"weight rises from 0 to 1 over this fraction of the steps {default('kl_warmup', '; 0 with --long')}")
    add("--n-components", type=number(int), help=f"K, the size of the code {default('n_components')}")
    add("--noise-std", type=zero_or_positive, help=f"the DAE's corruption (pixel units) at its last step and in the "
        f"evaluation {default('noise_std')}")
    add("--noise-start", type=zero_or_positive, help="the DAE's corruption at its first step, falling linearly to "
        f"--noise-std {default('noise_start', '; --noise-std with --long')}")
    add("--seed", type=int, help=f"seed of every random draw in training {default('seed')}")
    add("--train-size", type=number(int, at_most=(60000, "MNIST has 60000 training images")),
        help=f"train (and fit the probe) on the first N training images only {default('train_size')}")
    add("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
        help="where to compute; auto picks cuda, then mps, then cpu (default: auto)")
    add("--precision", choices=PRECISIONS, help=PRECISION_HELP)
    add("--data-dir", default=os.path.join(HERE, "data"), help="folder holding MNIST/raw; downloaded there if "
        "missing (default: data/ beside this file)")
    add("--out", help="output folder (default: runs/<model>-<dataset> beside this file)")
    add("--force", action="store_true", help="replace a finished run in --out (only once the new one finishes)")
    add("--resume", action="store_true", help="continue the interrupted run in --out from its resume.pt")
    add("--no-eval", action="store_true", help="train and save, but skip the evaluation")
    return p


def number(kind=float, zero=False, at_most=None):  # an argparse type: finite, positive (or zero), <= at_most[0]
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
        if not (value > 0 or zero and value == 0) or math.isinf(value):  # a NaN fails both comparisons
            raise argparse.ArgumentTypeError(f"must be {'zero or ' if zero else ''}positive and finite, got {text}")
        if at_most and value > at_most[0]:
            raise argparse.ArgumentTypeError(f"{at_most[1]}, got {text}")
        return value
    return parse


CONFIG_KEYS = evaluate.CONFIG_KEYS  # the settings that decide what is computed, saved in every checkpoint


def make_config(args):
    # A flag given on the command line wins, even when it is 0 (--noise-std 0); else the default.
    training = TRAINING[args.model]
    defaults = {**SHARED_DEFAULTS, **training, **(training["long"] if args.long else {})}
    config = {"model": args.model}
    for key in CONFIG_KEYS[1:]:
        config[key] = defaults[key] if getattr(args, key) is None else getattr(args, key)
    if "noise_start" in training and config["noise_start"] is None:
        config["noise_start"] = config["noise_std"]  # the same level throughout (the DAE's --long)
    return config


def settings(args):
    """(config, device, out, checkpoint) after every check that can fail before any data is read: the
    config of the flags or of resume.pt (--resume), the device, the checked --out, resume.pt read back."""
    config, training = make_config(args), TRAINING[args.model]
    for key in ("noise_start", "kl_warmup"):  # settings only some models take
        if getattr(args, key) is not None and key not in training:
            owners = " and the ".join(m.upper() for m, t in TRAINING.items() if key in t)
            raise UserError(f"--{key.replace('_', '-')}: only the {owners} takes it; drop it for --model {args.model}")
    if min(config["batch_size"], config["train_size"]) < training.get("min_batch", 1):
        raise UserError(f"--model {args.model} needs at least {training['min_batch']} images a batch (BatchNorm on "
                        f"single values); use a larger --batch-size (and --train-size)")
    device = evaluate.pick_device(args.device)
    config["precision"] = choose_precision(config["precision"], device)  # "auto" -> what this machine does best
    out = check_out(args, config)
    if not args.resume:
        return config, device, out, None
    keys = ("optimizer", "schedule", "epoch", "history", "rng")
    checkpoint = evaluate.load_checkpoint(os.path.join(out, "resume.pt"), keys)
    saved = checkpoint["config"]
    if saved["model"] != config["model"]:
        raise UserError(f"--resume: the run in {out} trains {saved['model']}, not {config['model']}")
    # A resumed run continues with its own settings: a flag asking for others is refused, not ignored
    for key in CONFIG_KEYS[1:]:
        asked = getattr(args, key) is not None or (args.long and key in training["long"])
        flag = f"--{key.replace('_', '-')}" if getattr(args, key) is not None else "--long"
        if asked and config[key] != saved[key]:
            raise UserError(f"--resume continues the run in {out} with its saved settings; "
                            f"drop {flag} (saved: {key} {saved[key]})")
    return saved, device, out, checkpoint


def check_out(args, config):
    """The output folder, after making sure this run will not destroy a result in it."""
    out = args.out or os.path.join(HERE, "runs", f"{config['model']}-{config['dataset']}")
    finished, resumable = (os.path.exists(os.path.join(out, name)) for name in ("model.pt", "resume.pt"))
    if args.resume and not resumable:
        raise UserError(f"--resume: there is no interrupted run in {out} (no resume.pt)"
                        + ("; it holds a finished model" if finished else ""))
    if not (args.resume or args.force) and (finished or resumable):
        raise UserError(f"{out} already holds a trained model.pt; pass --force to replace it once the new run "
                        f"finishes, or choose another --out" if finished else f"{out} holds an interrupted run "
                        f"(resume.pt); pass --resume to continue it or --force to start over")
    return out


def make_out(out, args):
    # Find out now, not after an hour of training, whether the results can be saved.
    try:
        os.makedirs(out, exist_ok=True)
        open(os.path.join(out, f".write-test-{os.getpid()}"), "w").close()
        os.remove(os.path.join(out, f".write-test-{os.getpid()}"))
    except OSError as e:
        raise UserError(f"cannot write to --out {out}: {e.strerror}; choose another --out") from None
    if args.force and not args.resume and os.path.exists(os.path.join(out, "resume.pt")):
        os.remove(os.path.join(out, "resume.pt"))  # --force over an interrupted run: start over


def save_checkpoint(obj, path):
    # With the format version load_checkpoint checks, and atomically: never half of a file.
    evaluate.atomic_write(path, lambda f: torch.save({"format": evaluate.FORMAT, **obj}, f))


def start_or_resume(out, model, optimizer, schedule, config, checkpoint):  # (history, first epoch)
    if checkpoint is None:
        history = {"loss_history": [], "test_loss_history": [], "step_losses": [], "train_seconds": 0.0}
        save_training_state(out, model, optimizer, schedule, config, history, epoch=0)
        return history, 0
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
        torch.set_rng_state(checkpoint["rng"]["cpu"])
        if device_rng(model) and checkpoint["rng"]["device"] is not None:
            device_rng(model).set_rng_state(checkpoint["rng"]["device"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"resume.pt does not fit this model and optimizer ({str(e).splitlines()[0][:120]}); "
                        f"start over with --force") from None
    return checkpoint["history"], checkpoint["epoch"]


def device_rng(model):  # the module of the generator on the model's device (None: the CPU's)
    return {"cuda": torch.cuda, "mps": torch.mps}.get(next(model.parameters()).device.type)


def save_training_state(out, model, optimizer, schedule, config, history, epoch):
    # Everything the loop needs to go on from the start of `epoch` exactly as if it had never
    # stopped, the random generators included (the next epoch's batch order, noise and samples).
    rng = {"cpu": torch.get_rng_state(), "device": device_rng(model) and device_rng(model).get_rng_state()}
    save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": config, "rng": rng,
                     "schedule": schedule.state_dict(), "epoch": epoch, "history": history},
                    os.path.join(out, "resume.pt"))


def end_of_epoch(model, loss_fn, optimizer, schedule, config, history, epoch_record, epoch, test_images, out):
    # After each epoch: stop if a loss is not finite, record the losses and the time, save resume.pt.
    losses, bs, t0 = epoch_record  # each step's loss (on the device), the batch size, the epoch's start
    losses = losses.cpu()  # waits for the last step, so the time is right on a GPU too
    seconds = time.perf_counter() - t0
    bad = torch.nonzero(~torch.isfinite(losses))  # once an epoch, not every step: no host sync in the loop
    if len(bad):
        raise TrainingStopped(f"the training loss became {losses[bad[0, 0]].item()} at epoch {epoch + 1}, step "
                              f"{bad[0, 0].item() + 1}; the last good training state is in "
                              f"{os.path.join(out, 'resume.pt')}. Start over with --force and a smaller --lr.")
    history["loss_history"].append(losses.double().mean().item())
    history["step_losses"] += losses.tolist()  # every step's loss, for the training curve
    history["test_loss_history"].append(held_out_loss(model, loss_fn, test_images, config["dataset"], bs))
    history["train_seconds"] += seconds
    save_training_state(out, model, optimizer, schedule, config, history, epoch=epoch + 1)
    print(f"epoch {epoch + 1:3d}/{config['epochs']}  train loss {history['loss_history'][-1]:10.4f}  "
          f"test loss {history['test_loss_history'][-1]:10.4f}  {seconds:6.1f} s  "
          f"{losses.shape[0] * bs / seconds:7.0f} img/s", flush=True)


def interrupted(out, config):
    path = os.path.join(out, "resume.pt")  # not there: Ctrl-C came before the first save
    print("interrupted" + (f": {path} holds the training state of the last finished epoch (or of the start); "
                           f"continue with: python train.py --model {config['model']} --out {out} --resume"
                           if os.path.exists(path) else ""), file=sys.stderr)
    return 130


# -------------------------------------------------------------------------------------------------
# Speed: how this machine computes a step, never what. Each setting here shortens a default run by a
# tenth or more on a processor the project runs on (docs/experiments.md, "Speed levers"); the loop
# applies them all in one line, `with faster_step(config)`.

PRECISIONS = ["auto", "fp32", "fp32-onednn"]
PRECISION_HELP = ("the step's arithmetic: float32 in torch's default kernels, or with the products in oneDNN's, faster "
                  "on AMD with AVX-512 (oneDNN rounds to bfloat16 with AMX); auto: fp32-onednn on an AMD CPU with "
                  "AVX-512, else fp32; evaluation is plain float32 (default: auto)")


@contextlib.contextmanager
def faster_step(config):
    # The steps inside the `with` run as config["precision"] says; oneDNN's setting is put back after.
    keep_freed_memory()
    backends = torch.backends.mkldnn.matmul, torch.backends.mkldnn.conv
    saved = [b.fp32_precision for b in backends]
    try:  # float32 products go to MKL unless oneDNN may use bfloat16; without AMX it runs float32 kernels
        for b in backends if config["precision"] == "fp32-onednn" else ():
            b.fp32_precision = "bf16"
        yield
    finally:
        for b, value in zip(backends, saved):
            b.fp32_precision = value


def keep_freed_memory():
    # Ask glibc's malloc to keep the memory a step frees for the next (True on Linux). By default it hands
    # large freed blocks back to the kernel, which zeroes each page again at its next touch: thousands of
    # page faults a step. Serving blocks under 32 MB from its heap, trimmed past 1 GB only, it reuses them.
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt  # glibc's; no such library on macOS, Windows or musl
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h; 32 MB is the largest mmap threshold
    return mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 and mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1


def choose_precision(requested, device):
    # "auto": fp32-onednn where it pays, on an AMD processor whose AVX-512 torch uses; else fp32
    if requested == "fp32-onednn" and device.type != "cpu":
        raise UserError(f"--precision fp32-onednn sets oneDNN, the CPU's library; on {device.type} use fp32")
    amd_avx512 = "AuthenticAMD" in cpu_words() and torch.backends.cpu.get_cpu_capability() == "AVX512"
    return requested if requested != "auto" else "fp32-onednn" if device.type == "cpu" and amd_avx512 else "fp32"


def cpu_words(cpuinfo="/proc/cpuinfo"):  # Linux's description of the processor, its maker among its words
    return set(open(cpuinfo).read().split()) if os.path.exists(cpuinfo) else set()


if __name__ == "__main__":
    sys.exit(main())
