"""Sweeps: train a model at several values of one train.py flag, or tighten one VAE's likelihood.

    # K, the size of the code, for one model (docs/sweeps.md):
    python tools/sweep.py train --model vae --flag n-components --values 2,5,10,20,50 --data-dir /path/to/mnist
    # the DAE's corruption, one level throughout (--flag names several flags, each set to the value):
    python tools/sweep.py train --model dae --flag noise-std,noise-start --values 0.1,0.2,0.3,0.5 --data-dir /path/to/mnist
    # the VAE's importance-sampled -log p(x) with more and more samples of z per image:
    python tools/sweep.py is-samples --checkpoint runs/vae-variance/model.pt --values 1,10,100,1000 --data-dir /path/to/mnist

Not collected by pytest. `train` runs `python train.py --model M --FLAG V --seed S` for every value and
seed (--seeds, default 0) into --out/M-FLAG-V-seedS (with --reuse, a run whose metrics.json exists
is read instead of trained again), then prints one markdown table, a row per value: the linear
probe and the k-nearest-neighbour readout (mean over the seeds, each seed in brackets when there
are several), the model's quality beside its oracle or baseline, and the training time.
`is-samples` loads one VAE and estimates -log p(x) on the first --images test images with each
number of samples S (S = 1 is the ELBO itself), timing each. Both write their table as JSON too.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
import ae  # noqa: E402
import evaluate  # noqa: E402
from benchmark import quality_number  # noqa: E402  (the benchmark's quality number, beside its oracle)


def train_runs(args):
    rows = []
    for value in args.values.split(","):
        runs = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            out = os.path.join(args.out, f"{args.model}-{args.flag.replace(',', '+')}-{value}-seed{seed}")
            flags = [word for flag in args.flag.split(",") for word in (f"--{flag}", value)]
            cmd = [sys.executable, os.path.join(REPO, "train.py"), "--model", args.model, *flags,
                   "--seed", str(seed), "--data-dir", args.data_dir, "--out", out, "--force", *args.extra]
            if not (args.reuse and os.path.exists(os.path.join(out, "metrics.json"))):
                print("$", " ".join(cmd[1:]), flush=True)
                subprocess.run(cmd, check=True)
            with open(os.path.join(out, "metrics.json")) as f:
                runs.append(json.load(f))
        rows.append({"value": value, "seeds": [r["config"]["seed"] for r in runs],
                     "probe": [r["probe_test_accuracy"] for r in runs], "knn": [r["knn_test_accuracy"] for r in runs],
                     "quality_name": quality_number(runs[0])[0], "quality": [quality_number(r)[1] for r in runs],
                     "train_seconds": [r["train_seconds"] for r in runs],
                     # where the distance to the oracle lies (DAE: its excess MSE; VAE: its code's use)
                     "oracle_mse": [r.get("oracle_mse") for r in runs],
                     "excess_strokes": [r.get("excess_mse", {}).get("stroke_pixels") for r in runs],
                     "excess_background": [r.get("excess_mse", {}).get("background_pixels") for r in runs],
                     "active_units": [r.get("active_units") for r in runs],
                     "gap_kl": [r.get("gap_to_true_model", {}).get("kl") for r in runs],
                     "gap_strokes": [r.get("gap_to_true_model", {}).get("stroke_pixels") for r in runs],
                     "gap_background": [r.get("gap_to_true_model", {}).get("background_pixels") for r in runs],
                     "kl_sorted": [sorted(r.get("kl_per_dimension", []), reverse=True) for r in runs]})

    def cell(values, fmt):
        if None in values:
            return "-"
        mean = fmt(statistics.mean(values))
        return mean if len(values) == 1 else f"{mean} ({' / '.join(fmt(v) for v in values)})"

    pct, num = (lambda v: f"{100 * v:.2f}%"), (lambda v: f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}")
    columns = [(args.flag, lambda r: r["value"]), ("probe", lambda r: cell(r["probe"], pct)),
               ("10 nearest codes", lambda r: cell(r["knn"], pct)),
               (rows[0]["quality_name"], lambda r: cell(r["quality"], num))]
    if args.model == "dae":
        columns += [("optimal MSE", lambda r: cell(r["oracle_mse"], lambda v: f"{v:.5f}")),
                    ("excess on strokes", lambda r: cell(r["excess_strokes"], lambda v: f"{v:.5f}")),
                    ("excess on background", lambda r: cell(r["excess_background"], lambda v: f"{v:.5f}"))]
    if args.model == "vae":  # the KL of each dimension, largest first, averaged position by position over seeds
        one = lambda v: f"{v:.1f}"  # noqa: E731
        columns += [("gap: KL", lambda r: cell(r["gap_kl"], one)), ("strokes", lambda r: cell(r["gap_strokes"], one)),
                    ("background", lambda r: cell(r["gap_background"], one)),
                    ("active units", lambda r: cell(r["active_units"], lambda v: f"{v:g}")),
                    ("KL per dimension, largest first", lambda r: " ".join(
                        f"{statistics.mean(kl):.1f}" for kl in zip(*r["kl_sorted"])))]
    columns.append(("train s", lambda r: cell(r["train_seconds"], lambda v: f"{v:.0f}")))
    print("\n| " + " | ".join(name for name, _ in columns) + " |\n|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(get(r) for _, get in columns) + " |")
    return {"model": args.model, "flag": args.flag, "rows": rows}


def is_samples(args):
    model, config, _ = evaluate.load_model(args.checkpoint)
    if config["model"] != "vae":
        sys.exit(f"sweep.py: error: {args.checkpoint} holds a {config['model']}; is-samples needs a VAE")
    model.eval()
    images = evaluate.load_splits(args.data_dir).test_images[: args.images]
    rows = []
    for n in [int(v) for v in args.values.split(",")]:
        t = time.perf_counter()
        neg_log_p, neg_elbo, _ = evaluate.likelihood_estimate(model, images, config["dataset"], "cpu", n)
        rows.append({"samples": n, "neg_log_p": neg_log_p, "neg_elbo": neg_elbo, "seconds": time.perf_counter() - t})
    print(f"\nfirst {len(images)} test images, {args.checkpoint}\n\n| samples of z | -log p(x) | -ELBO (same draws) "
          f"| bound's slack | seconds |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['samples']} | {r['neg_log_p']:.1f} | {r['neg_elbo']:.1f} | {r['neg_elbo'] - r['neg_log_p']:.1f} "
              f"| {r['seconds']:.1f} |")
    return {"checkpoint": args.checkpoint, "images": len(images), "threads": torch.get_num_threads(), "rows": rows}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    t = sub.add_parser("train", help="train at several values of one train.py flag")
    t.add_argument("--model", required=True, choices=sorted(ae.MODELS))
    t.add_argument("--flag", required=True, help="a train.py flag without its dashes, e.g. n-components; or several, comma-separated, each set to the value")
    t.add_argument("--seeds", default="0", help="comma-separated training seeds (default: 0)")
    t.add_argument("--out", default=os.path.join(REPO, "runs", "sweep"), help="where the runs go")
    t.add_argument("--reuse", action="store_true", help="read runs whose metrics.json exists instead of training")
    t.add_argument("extra", nargs="*", help="more train.py arguments, after --")
    s = sub.add_parser("is-samples", help="the VAE's importance-sampled -log p(x) with several numbers of samples")
    s.add_argument("--checkpoint", required=True, help="a VAE's model.pt")
    s.add_argument("--images", type=int, default=evaluate.IS_IMAGES, help="the first N test images")
    for q in (t, s):
        q.add_argument("--values", required=True, help="comma-separated values")
        q.add_argument("--data-dir", default=os.path.join(REPO, "data"), help="folder holding MNIST/raw")
        q.add_argument("--json", help="where the table goes as JSON")
    args = p.parse_args()
    result = train_runs(args) if args.kind == "train" else is_samples(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
