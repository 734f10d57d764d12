"""Experiment: a training variant against a model's default run, paired by seed, decided on validation.

    nice -n 5 python tests/experiment_pairs.py --data-dir /path/to/mnist --model vae --variant kl_warmup \\
        --seeds 0,1,2,3,4

Not collected by pytest. Each run trains as `python train.py --model M --seed S` does (train.make_config's
defaults, torch.manual_seed(seed) before the model is built, then train.train on all 60000 images,
CPU), with the variant's change and nothing else, so the two arms of a seed start from the same
weights and draw the same batches and noise until the change first acts. Then the probe as
evaluate.py fits it (evaluate.codes_and_readouts: the DAE's codes from the AdaBN copy) gives two numbers:
`probe_validation_accuracy`, fitted on the first 50000 training codes and read on the last 10000,
which is the number a decision is made by, and `probe_test_accuracy`, reported once per decision.

Variants (VARIANTS below): kl_warmup (VAE: the KL term's weight rising linearly from 0 to 1 over the
first 60% of the steps, then 1), constant_lr (the learning rate constant at the default peak, no
warm-up or decay), betas_999 (Adam's beta2 0.999 instead of 0.99), bf16 (train.py --precision bf16:
the layers of the training step in bfloat16; the default arm is float32). Prints one line per run, then per
seed both arms and the paired difference, and the mean and sd of each; --json writes them all.
Options: --threads per run (default 1), --jobs runs at a time (default 2), --out scratch folder.
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


def kl_warmup(train, ae, torch):
    # the -ELBO with the KL weighted by beta = min(1, step / (0.6 * total steps)), counted per call
    state = {"step": 0}

    def loss_fn_for(config):
        def loss(model, x):
            if not model.training:  # the test loss at the end of each epoch: the plain -ELBO
                return ae.vae_loss(model, x)
            total = config["epochs"] * (60000 // config["batch_size"])
            beta = min(1.0, state["step"] / (0.6 * total))
            state["step"] += 1
            kl, nll = ae.neg_elbo_terms(model, x)
            return (beta * kl.sum(dim=1) + nll.flatten(1).sum(dim=1)).mean()
        return loss
    train.loss_function = loss_fn_for


def constant_lr(train, ae, torch):
    train.SHARED_DEFAULTS["lr_schedule"] = "constant"


def betas_999(train, ae, torch):
    adam = torch.optim.Adam

    def with_beta2(params, *args, **kwargs):
        kwargs["betas"] = (0.9, 0.999)
        return adam(params, *args, **kwargs)
    train.torch.optim.Adam = with_beta2


def bf16(train, ae, torch):
    pass  # one_run trains with --precision bf16 instead of fp32


VARIANTS = {"default": None, "kl_warmup": kl_warmup, "constant_lr": constant_lr, "betas_999": betas_999, "bf16": bf16}


def one_run(model_name, variant, seed, data_dir, out, threads):
    import torch
    torch.set_num_threads(threads)
    import ae
    import evaluate
    import train
    if VARIANTS[variant] is not None:
        VARIANTS[variant](train, ae, torch)
    args = train.get_parser().parse_args(["--model", model_name, "--seed", str(seed), "--device", "cpu",
                                          "--data-dir", data_dir, "--out", out, "--force", "--precision", "fp32"])
    config = train.make_config(args)
    config["precision"] = "bf16" if variant == "bf16" else "fp32"
    torch.manual_seed(seed)
    train_images, _ = train.data.load_mnist(data_dir, train=True)
    test_images, _ = train.data.load_mnist(data_dir, train=False)
    os.makedirs(out, exist_ok=True)
    model = ae.MODELS[model_name](config["n_components"])
    t0 = time.perf_counter()
    history = train.train(model, config, train_images, test_images, out)
    seconds = time.perf_counter() - t0
    model.eval()
    splits = evaluate.load_splits(data_dir)
    _, metrics = evaluate.codes_and_readouts(model, config, splits, torch.device("cpu"))
    return {"model": model_name, "variant": variant, "seed": seed, "train_seconds": seconds,
            "final_loss": history["loss_history"][-1], "test_loss": history["test_loss_history"][-1],
            "validation": metrics["probe_validation_accuracy"], "test": metrics["probe_test_accuracy"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", required=True, choices=["bae", "dae", "vae"])
    p.add_argument("--variant", required=True, choices=sorted(v for v in VARIANTS if v != "default"))
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="/tmp/experiment_pairs")
    p.add_argument("--json", help="write every run and the summary here")
    p.add_argument("--one", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)  # a subprocess's own run
    args = p.parse_args()
    if args.one:
        arm, seed = args.one[0], int(args.one[1])
        out = os.path.join(args.out, f"{args.model}-{arm}-{seed}")
        print(json.dumps(one_run(args.model, arm, seed, args.data_dir, out, args.threads)))
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(arm, seed) for seed in seeds for arm in ("default", args.variant)]

    def launch(job):
        cmd = [sys.executable, __file__, "--data-dir", args.data_dir, "--model", args.model, "--variant", args.variant,
               "--threads", str(args.threads), "--out", args.out, "--one", job[0], str(job[1])]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{result['variant']:12} seed {result['seed']}: validation {result['validation']:.2%}, test "
              f"{result['test']:.2%}, {result['train_seconds']:.1f} s, last epoch's loss {result['final_loss']:.4f}",
              flush=True)
        return result

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(launch, jobs))
    by = {(r["variant"], r["seed"]): r for r in results}
    print(f"\n{args.model}: {args.variant} against the default, paired by seed (points)")
    print(f"{'seed':>4} {'valid default':>14} {'valid variant':>14} {'diff':>6} {'test default':>13} "
          f"{'test variant':>13} {'diff':>6}")
    diffs = {"validation": [], "test": []}
    for s in seeds:
        a, b = by[("default", s)], by[(args.variant, s)]
        for key in diffs:
            diffs[key].append(100 * (b[key] - a[key]))
        print(f"{s:4d} {a['validation']:14.2%} {b['validation']:14.2%} {diffs['validation'][-1]:+6.2f} "
              f"{a['test']:13.2%} {b['test']:13.2%} {diffs['test'][-1]:+6.2f}")
    summary = {}
    for key in diffs:
        sd = statistics.stdev(diffs[key]) if len(seeds) > 1 else float("nan")
        means = {arm: statistics.mean(by[(arm, s)][key] for s in seeds) for arm in ("default", args.variant)}
        summary[key] = {"means": means, "mean_difference": statistics.mean(diffs[key]), "sd_difference": sd}
        print(f"{key}: default {means['default']:.2%}, {args.variant} {means[args.variant]:.2%}, paired difference "
              f"{statistics.mean(diffs[key]):+.2f} (sd {sd:.2f}, standard error {sd / len(seeds) ** 0.5:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "runs": results, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
