"""Experiment: training variants against a baseline, paired by seed, decided on validation.

    nice -n 5 python tools/experiment_pairs.py --data-dir /path/to/mnist --model vae \\
        --baseline "--kl-warmup 0 --precision fp32" --variant "--kl-warmup 0.6 --precision fp32" --seeds 0,1,2,3,4

Not collected by pytest. Each arm is a set of train.py flags (--baseline, and one --variant or more),
and each run trains as `python train.py --model M --seed S <flags>` does (train.make_config, the
precision chosen by train.choose_precision for the CPU, torch.manual_seed(seed) before the model is
built, then train.train on the training images), so the arms of a seed start from the same weights
and draw the same batches and noise until their difference first acts. Then the probe as
evaluate.py fits it (evaluate.codes_and_readouts: the DAE's codes from the AdaBN copy) gives two
numbers: `probe_validation_accuracy`, fitted on the first 50000 training codes and read on the last
10000, which is the number a decision is made by, and `probe_test_accuracy`, reported once per decision.

Prints one line per run, then for each variant and seed both arms and the paired difference, and
the mean and sd of each; --json writes them all. Options: --threads per run (default 1), --jobs
runs at a time (default 2), --out scratch folder. Seconds are one-thread times of runs that share
the machine: compare them with each other, not with the benchmark's.

An arm may also name changes that train.py has no flag for, as words starting with "+" among its
flags (PATCHES below: Adam's betas, a one-cycle schedule, a corruption level that changes over the
run, now train.py's --noise-start; the DAE's layout before its stride), so that a lever can be measured
before it earns a place in train.py, or one that left be measured again:

    --variant "+adam-beta2=0.999" --variant "+one-cycle --lr 5e-3" --variant "+noise-ramp=0.4,0.1"
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)


def adam_beta2(train, config, value):
    # Adam's second-moment average over ~1/(1 - beta2) steps: train.train's 0.99, or another
    adam = train.torch.optim.Adam
    train.torch.optim.Adam = lambda params, **kw: adam(params, **{**kw, "betas": (kw["betas"][0], float(value))})


def one_cycle(train, config, value=None):
    # Smith's one-cycle policy as torch has it (OneCycleLR): the rate rises from a 25th of the peak
    # (--lr) to the peak over the first 30% of the steps, then falls to 1e-4 of it, both as cosines,
    # while Adam's beta1 falls from 0.95 to 0.85 and rises back. It takes the place of the LambdaLR
    # train.train builds (this process trains one run and nothing else).
    lr_scheduler = train.torch.optim.lr_scheduler

    class OneCycle(lr_scheduler.OneCycleLR):
        def __init__(self, optimizer, lr_lambda):
            steps = config["train_size"] // min(config["batch_size"], config["train_size"])
            super().__init__(optimizer, max_lr=config["lr"], total_steps=config["epochs"] * steps)

    lr_scheduler.LambdaLR = OneCycle


def noise_ramp(train, config, value):
    # The DAE's corruption sigma_n moving linearly from a first to a last level over the training
    # steps ("a,b"), which train.py has since learnt: --noise-start a --noise-std b (the test loss at b)
    config["noise_start"], config["noise_std"] = (float(v) for v in value.split(","))


def unstrided_dae(train, config, value=None):
    # The DAE's layout until 2026-12-06: its second convolution, and the decoder's first transposed
    # one, of stride 1 (16 x 20 x 20 = 6400 features); built in the order it was, so a seed gives
    # the same initial weights as then
    nn = train.torch.nn

    class Unstrided(train.ae.DenoisingAE):
        def __init__(self, n_components=10):
            nn.Module.__init__(self)
            self.n_components = n_components
            self.encoder = nn.Sequential(
                nn.Conv2d(1, 6, 5), nn.ReLU(), nn.BatchNorm2d(6), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.BatchNorm2d(16),
                nn.Flatten(), nn.Linear(6400, 250), nn.ReLU(), nn.Linear(250, n_components))
            self.decoder = nn.Sequential(
                nn.Linear(n_components, 250), nn.ReLU(), nn.Linear(250, 6400), nn.ReLU(), nn.Unflatten(1, (16, 20, 20)),
                nn.ConvTranspose2d(16, 6, 5), nn.ReLU(), nn.BatchNorm2d(6),
                nn.ConvTranspose2d(6, 1, 5), nn.ReLU(), nn.BatchNorm2d(1))

    train.ae.MODELS["dae"] = Unstrided


PATCHES = {"adam-beta2": adam_beta2, "one-cycle": one_cycle, "noise-ramp": noise_ramp, "unstrided-dae": unstrided_dae}


def one_run(model_name, flags, seed, data_dir, out, threads):
    import torch
    torch.set_num_threads(threads)
    import evaluate
    import train
    words = shlex.split(flags)
    patches = [w[1:].partition("=") for w in words if w.startswith("+")]
    args = train.get_parser().parse_args(["--model", model_name, "--seed", str(seed), "--device", "cpu",
                                          "--data-dir", data_dir, "--out", out, "--force"]
                                         + [w for w in words if not w.startswith("+")])
    config, device, _, _ = train.settings(args)  # the flags' checks, and "auto" resolved for this CPU
    for name, _, value in patches:
        PATCHES[name](train, config, value)
    torch.manual_seed(seed)
    train_images, _ = train.data.load_mnist(data_dir, train=True)
    test_images, _ = train.data.load_mnist(data_dir, train=False)
    os.makedirs(out, exist_ok=True)
    model = train.ae.MODELS[model_name](config["n_components"])
    t0 = time.perf_counter()
    history = train.train(model, config, train_images[: config["train_size"]], test_images, out)
    seconds = time.perf_counter() - t0
    model.eval()
    splits = evaluate.load_splits(data_dir, config["train_size"])
    _, metrics = evaluate.codes_and_readouts(model, config, splits, device, evaluate.EVALUATION[model_name]["corrupted"])
    return {"model": model_name, "flags": flags, "seed": seed, "config": config, "train_seconds": seconds,
            "final_loss": history["loss_history"][-1], "test_loss": history["test_loss_history"][-1],
            "validation": metrics["probe_validation_accuracy"], "test": metrics["probe_test_accuracy"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", required=True, choices=["bae", "dae", "vae"])
    p.add_argument("--baseline", default="", help="train.py flags of the arm the variants are compared with")
    p.add_argument("--variant", action="append", required=True, help="train.py flags of a variant (repeatable)")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="/tmp/experiment_pairs")
    p.add_argument("--json", help="write every run and the summary here")
    p.add_argument("--baseline-from", metavar="JSON", help="take the baseline's runs from an earlier --json of the "
                   "same model and baseline flags instead of training them again (they reproduce to the digit)")
    p.add_argument("--one", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)  # a subprocess's own run
    args = p.parse_args()
    arms = [args.baseline] + args.variant
    if args.one:
        arm, seed = int(args.one[0]), int(args.one[1])
        out = os.path.join(args.out, f"{args.model}-arm{arm}-{seed}")
        print(json.dumps(one_run(args.model, arms[arm], seed, args.data_dir, out, args.threads)))
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    earlier = []
    if args.baseline_from:
        with open(args.baseline_from) as f:
            earlier = [r for r in json.load(f)["runs"]
                       if r["model"] == args.model and r["flags"] == args.baseline and r["seed"] in seeds]
        if sorted(r["seed"] for r in earlier) != sorted(seeds):
            sys.exit(f"--baseline-from {args.baseline_from}: no {args.model} run with the baseline flags "
                     f"{args.baseline!r} for each of the seeds {seeds}")
    jobs = [(arm, seed) for seed in seeds for arm in range(1 if earlier else 0, len(arms))]

    def launch(job):
        cmd = [sys.executable, __file__, "--data-dir", args.data_dir, "--model", args.model,
               "--baseline", args.baseline, "--threads", str(args.threads), "--out", args.out,
               "--one", str(job[0]), str(job[1])]
        for flags in args.variant:
            cmd += ["--variant", flags]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"arm {arms[job[0]]!r} seed {job[1]} failed:\n{proc.stderr[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"[{result['flags'] or 'baseline'}] seed {result['seed']} ({result['config']['precision']}): "
              f"validation {result['validation']:.2%}, test {result['test']:.2%}, {result['train_seconds']:.1f} s, "
              f"last epoch's loss {result['final_loss']:.4f}", flush=True)
        return result

    with ThreadPoolExecutor(args.jobs) as pool:
        results = earlier + list(pool.map(launch, jobs))
    by = {(r["flags"], r["seed"]): r for r in results}
    summary = {}
    for variant in args.variant:
        print(f"\n{args.model}: [{variant}] against [{args.baseline}], paired by seed (points)")
        print(f"{'seed':>4} {'valid base':>11} {'valid variant':>14} {'diff':>6} {'test base':>10} "
              f"{'test variant':>13} {'diff':>6}")
        diffs = {"validation": [], "test": []}
        for s in seeds:
            a, b = by[(args.baseline, s)], by[(variant, s)]
            for key in diffs:
                diffs[key].append(100 * (b[key] - a[key]))
            print(f"{s:4d} {a['validation']:11.2%} {b['validation']:14.2%} {diffs['validation'][-1]:+6.2f} "
                  f"{a['test']:10.2%} {b['test']:13.2%} {diffs['test'][-1]:+6.2f}")
        summary[variant] = {}
        for key in diffs:
            sd = statistics.stdev(diffs[key]) if len(seeds) > 1 else float("nan")
            means = {arm: statistics.mean(by[(arm, s)][key] for s in seeds) for arm in (args.baseline, variant)}
            summary[variant][key] = {"baseline_mean": means[args.baseline], "variant_mean": means[variant],
                                     "mean_difference": statistics.mean(diffs[key]), "sd_difference": sd}
            print(f"{key}: baseline {means[args.baseline]:.2%}, variant {means[variant]:.2%}, paired difference "
                  f"{statistics.mean(diffs[key]):+.2f} (sd {sd:.2f}, standard error {sd / len(seeds) ** 0.5:.2f})")
        seconds = {arm: statistics.mean(by[(arm, s)]["train_seconds"] for s in seeds) for arm in (args.baseline, variant)}
        summary[variant]["train_seconds"] = {"baseline_mean": seconds[args.baseline], "variant_mean": seconds[variant]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(shlex.quote(a) for a in sys.argv), "runs": results, "summary": summary},
                      f, indent=2)


if __name__ == "__main__":
    main()
