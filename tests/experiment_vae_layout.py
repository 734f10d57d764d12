"""Experiment: the VAE with the DAE's BatchNorm layout, paired by seed with today's VAE.

    nice -n 5 python tests/experiment_vae_layout.py --data-dir /path/to/mnist --seeds 0,1,2,3,4

Run from the repository root (or anywhere: it imports ae, data, evaluate and train from the folder
above this file). Not collected by pytest. About 15-25 minutes on 2 cores with the defaults (ten
3-epoch runs, one thread each, two at a time).

The two arms:
  vae     ae.VAE as `python train.py --model vae --seed S` builds it: BatchNorm before each ReLU of the
          two convolutions and BatchNorm1d on the 250 features (ae.conv_encoder_body), no BatchNorm
          in the decoder body (ae.conv_decoder_body);
  dae-bn  the same VAE with the DAE's layout (ae.DenoisingAE): encoder body Conv2d(1,6,5), ReLU,
          BatchNorm2d(6), Conv2d(6,16,5), ReLU, BatchNorm2d(16), Flatten, Linear(6400,250), ReLU
          (BatchNorm after each ReLU, none on the 250 features); decoder body Linear(K,250), ReLU,
          Linear(250,6400), ReLU, Unflatten, ConvTranspose2d(16,6,5), ReLU, BatchNorm2d(6). The VAE's
          enc_mu / enc_logvar, its two-channel dec_heads and its log-variance floor are kept, with
          no BatchNorm on the heads (the mean head is signed).

Both arms train exactly as train.py does: train.make_config's defaults for --model vae (3 epochs,
batch 128, lr 4e-3 with warmup_cosine, K=10, all 60000 images, CPU), torch.manual_seed(seed) before
the model is built (as train.run), then train.train(model, config, train_images, test_images, out).
The probe is evaluate.py's probe_test_accuracy for the VAE: evaluate.codes_of(model.eval(), images,
"variance", "cpu", evaluate.SEEDS["train" / "test"]) and evaluate.probe_accuracy.

Pairing. VariantVAE calls ae.VAE.__init__ and then, under torch.manual_seed(seed) again, builds all
five parts from scratch in the constructor's order (encoder, enc_mu, enc_logvar, decoder, dec_heads),
so its weights are a deterministic function of the seed. "Paired" means: same seed, same batch
order, same varianceMNIST noise and same reparameterisation noise stream. BatchNorm layers draw no
random numbers and the two layouts have the same random-initialised layers in the same order, so the
variant's global generator after construction is the baseline's, and its convolution and linear
weights start equal to the default VAE's for the same seed; the script checks both for every run and
prints them ("same init" and "same rng" below). A default-VAE run here is the same computation as
`python train.py --model vae --seed S` at the same thread count (its probe is thread-count sensitive:
seed 0 gives about 87.2-87.8% depending on the threads).

Prints one line per run as it finishes (arm, seed, probe test accuracy, training seconds, final
epoch's mean training loss, the pairing checks), then a table: per seed both arms' probe accuracy
and the paired difference dae-bn - vae (points), then each arm's mean and sd over the seeds and the
mean and sd of the differences. Options: --seeds (default 0,1,2,3,4), --threads (torch threads per
run, default 1), --jobs (runs at a time, default 2, each a subprocess of this script), --data-dir,
--out (scratch folder for each run's resume.pt, log and result.json; default
/tmp/experiment_vae_layout), --arms (default vae,dae-bn).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

ARMS = ("vae", "dae-bn")


def build_variant_class():
    import torch.nn as nn

    import ae

    class VariantVAE(ae.VAE):
        """ae.VAE with the DAE's BatchNorm layout; see the module docstring."""

        def __init__(self, n_components=10, min_logvar=-6.0, seed=0):
            super().__init__(n_components, min_logvar)
            import torch
            torch.manual_seed(seed)  # rebuild from scratch: the weights depend on the seed alone
            # the constructor's order: encoder, enc_mu, enc_logvar, decoder, dec_heads
            self.encoder = nn.Sequential(
                nn.Conv2d(1, 6, 5), nn.ReLU(), nn.BatchNorm2d(6),  # (B, 1, 28, 28) -> (B, 6, 24, 24)
                nn.Conv2d(6, 16, 5), nn.ReLU(), nn.BatchNorm2d(16),  # -> (B, 16, 20, 20)
                nn.Flatten(),  # -> (B, 6400)
                nn.Linear(6400, 250), nn.ReLU(),  # -> (B, 250)
            )
            self.enc_mu = nn.Linear(250, n_components)
            self.enc_logvar = nn.Linear(250, n_components)
            self.decoder = nn.Sequential(
                nn.Linear(n_components, 250), nn.ReLU(),  # (B, K) -> (B, 250)
                nn.Linear(250, 6400), nn.ReLU(),  # -> (B, 6400)
                nn.Unflatten(1, (16, 20, 20)),  # -> (B, 16, 20, 20)
                nn.ConvTranspose2d(16, 6, 5), nn.ReLU(), nn.BatchNorm2d(6),  # -> (B, 6, 24, 24)
            )
            self.dec_heads = nn.ConvTranspose2d(6, 2, 5)  # (B, 6, 24, 24) -> (B, 2, 28, 28), no BatchNorm

    return VariantVAE


def random_init_tensors(model):
    # The randomly initialised tensors (conv and linear weights and biases), in creation order.
    import torch.nn as nn
    mods = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    order = [model.encoder, model.enc_mu, model.enc_logvar, model.decoder, model.dec_heads]
    ordered = [m for part in order for m in part.modules() if m in mods]
    return [t.detach().clone() for m in ordered for t in (m.weight, m.bias)]


def one_run(arm, seed, threads, data_dir, out):
    """Trains one arm for one seed in this process; returns its result as a dict."""
    import torch
    torch.set_num_threads(threads)
    import ae
    import data
    import evaluate
    import train

    args = train.get_parser().parse_args(["--model", "vae", "--seed", str(seed), "--device", "cpu"])
    config = train.make_config(args)
    device = torch.device("cpu")

    # The baseline's initial weights and generator state, for the pairing checks.
    torch.manual_seed(config["seed"])
    reference = ae.MODELS["vae"](config["n_components"])
    ref_init, ref_rng = random_init_tensors(reference), torch.get_rng_state()
    del reference

    torch.manual_seed(config["seed"])  # as train.run: the one place training randomness is seeded
    train_images, _ = data.load_mnist(data_dir, train=True, device=device)
    test_images, _ = data.load_mnist(data_dir, train=False, device=device)
    train_images = train_images[: config["train_size"]]
    if arm == "vae":
        model = ae.MODELS["vae"](config["n_components"]).to(device)
    else:
        model = build_variant_class()(config["n_components"], seed=config["seed"]).to(device)
    init = random_init_tensors(model)
    same_init = len(init) == len(ref_init) and all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(init, ref_init))
    same_rng = torch.equal(torch.get_rng_state(), ref_rng)
    print(f"{arm} seed {seed}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{torch.get_num_threads()} threads, same init {same_init}, same rng {same_rng}; "
          f"ae from {ae.__file__}", flush=True)
    print(model, flush=True)

    os.makedirs(out, exist_ok=True)
    history = train.train(model, config, train_images, test_images, out)

    model.eval()
    train_all, train_labels = data.load_mnist(data_dir, train=True)
    test_all, test_labels = data.load_mnist(data_dir, train=False)
    n = config["train_size"]
    train_all, train_labels = train_all[:n], train_labels[:n]
    t0 = time.perf_counter()
    probe = evaluate.probe_accuracy(
        evaluate.codes_of(model, train_all, config["dataset"], "cpu", evaluate.SEEDS["train"]), train_labels,
        evaluate.codes_of(model, test_all, config["dataset"], "cpu", evaluate.SEEDS["test"]), test_labels)
    result = {"arm": arm, "seed": seed, "probe": probe, "train_seconds": history["train_seconds"],
              "final_train_loss": history["loss_history"][-1], "loss_history": history["loss_history"],
              "test_loss_history": history["test_loss_history"], "threads": torch.get_num_threads(),
              "same_init": same_init, "same_rng": same_rng, "probe_seconds": time.perf_counter() - t0,
              "config": config, "torch": torch.__version__}
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def launch(arm, seed, args):
    """One run in a subprocess of this script (its own threads, its own generators)."""
    out = os.path.join(args.out, f"{arm}-seed{seed}")
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONUNBUFFERED="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--one", f"{arm}:{seed}", "--threads", str(args.threads),
           "--data-dir", args.data_dir, "--out", out]
    t0 = time.time()
    with open(os.path.join(out, "log.txt"), "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        print(f"{arm} seed {seed}: FAILED (exit {proc.returncode}), see {os.path.join(out, 'log.txt')}", flush=True)
        return None
    with open(os.path.join(out, "result.json")) as f:
        r = json.load(f)
    r["wall_seconds"] = time.time() - t0
    print(f"{r['arm']:6s} seed {r['seed']}  probe {100 * r['probe']:6.2f}%  train {r['train_seconds']:6.1f} s  "
          f"final train loss {r['final_train_loss']:9.3f}  ({r['threads']} thread(s); same init {r['same_init']}, "
          f"same rng {r['same_rng']}; wall {r['wall_seconds']:.0f} s)", flush=True)
    return r


def sd(values):
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def print_table(results, seeds, arms):
    by = {(r["arm"], r["seed"]): r for r in results if r is not None}
    print()
    if len(arms) < 2:
        for arm in arms:
            accs = [100 * by[(arm, s)]["probe"] for s in seeds if (arm, s) in by]
            print(f"{arm}: " + ", ".join(f"{a:.2f}%" for a in accs))
        return
    a, b = arms
    print(f"| seed | {a} | {b} | {b} - {a} (points) |")
    print("|---|---|---|---|")
    diffs, col = [], {a: [], b: []}
    for s in seeds:
        ra, rb = by.get((a, s)), by.get((b, s))
        pa = f"{100 * ra['probe']:.2f}%" if ra else "-"
        pb = f"{100 * rb['probe']:.2f}%" if rb else "-"
        d = ""
        if ra:
            col[a].append(100 * ra["probe"])
        if rb:
            col[b].append(100 * rb["probe"])
        if ra and rb:
            diffs.append(100 * (rb["probe"] - ra["probe"]))
            d = f"{diffs[-1]:+.2f}"
        print(f"| {s} | {pa} | {pb} | {d} |")

    def ms(v, fmt, unit=""):
        return f"{statistics.mean(v):{fmt}}{unit} (sd {sd(v):.2f})" if v else "-"
    print(f"| mean (sd) | {ms(col[a], '.2f', '%')} | {ms(col[b], '.2f', '%')} | {ms(diffs, '+.2f')} |")
    times = {arm: [by[(arm, s)]["train_seconds"] for s in seeds if (arm, s) in by] for arm in arms}
    print(f"mean train seconds: " + ", ".join(f"{arm} {statistics.mean(t):.1f}" for arm, t in times.items() if t))
    if diffs:
        print(f"paired differences {b} - {a}: n {len(diffs)}, {sum(d < 0 for d in diffs)} negative, "
              f"mean {statistics.mean(diffs):+.2f}, sd {sd(diffs):.2f}, "
              f"standard error {sd(diffs) / len(diffs) ** 0.5:.2f} points")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default 0,1,2,3,4)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    p.add_argument("--data-dir", default=os.path.join(REPO, "data"), help="folder holding MNIST/raw")
    p.add_argument("--out", default="/tmp/experiment_vae_layout", help="scratch folder for the runs")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)} (default both)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: "arm:seed", one run in this process
    args = p.parse_args(argv)
    args.data_dir = os.path.abspath(args.data_dir)
    args.out = os.path.abspath(args.out)

    if args.one:
        arm, seed = args.one.split(":")
        one_run(arm, int(seed), args.threads, args.data_dir, args.out)
        return 0

    seeds = [int(s) for s in args.seeds.split(",")]
    arms = [a for a in args.arms.split(",")]
    if any(a not in ARMS for a in arms):
        p.error(f"--arms: choose from {', '.join(ARMS)}")
    print(f"{len(seeds) * len(arms)} runs ({', '.join(arms)} x seeds {seeds}), {args.threads} thread(s) each, "
          f"{args.jobs} at a time, on {os.cpu_count()} CPUs; code from {REPO}; scratch {args.out}", flush=True)
    t0 = time.time()
    jobs = [(arm, s) for s in seeds for arm in arms]  # pairs side by side: both arms see the same load
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda job: launch(*job, args), jobs))
    print_table(results, seeds, arms)
    print(f"wall time {time.time() - t0:.0f} s")
    return 0 if all(r is not None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
