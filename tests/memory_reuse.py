"""Seconds and page faults of real training steps with and without train.keep_freed_memory().

    python tests/memory_reuse.py --data-dir /path/to/mnist [--models dae,vae,bae] [--steps 300] [--rounds 3]

Not collected by pytest. For each model, each round runs train.train with the model's defaults on
the first steps x batch training images (one epoch, a test loss on 1000 test images) in two fresh
processes, one after train.keep_freed_memory() and one with glibc's malloc as it is, in turns, and
prints each process's training seconds per step (the step loop only, as train.py counts them) and
page faults per step (the kernel's count of minor faults over the whole train.train call). The
setting is for a whole process and cannot be undone, hence a process per run. The numbers each
run computes are the same in both (tests/test_train.py checks it); only the time differs. A loop
that repeats one fixed batch, as tests/step_precision.py does, may show no faults either way:
glibc adapts its thresholds to a steady pattern, and the real loop's is not one.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def one_run(model_name, keep, steps, data_dir, threads):
    import torch
    torch.set_num_threads(threads)
    import train
    if keep:
        assert train.keep_freed_memory(), "not glibc: nothing to compare"
    config = train.make_config(train.get_parser().parse_args(["--model", model_name, "--device", "cpu"]))
    config["precision"] = train.choose_precision(config["precision"], torch.device("cpu"))
    config["epochs"] = 1
    torch.manual_seed(0)
    train_images, _ = train.data.load_mnist(data_dir, train=True)
    test_images, _ = train.data.load_mnist(data_dir, train=False)
    model = train.ae.MODELS[model_name](config["n_components"])
    with tempfile.TemporaryDirectory() as out:
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        history = train.train(model, config, train_images[: steps * config["batch_size"]], test_images[:1000], out)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"ms_per_step": 1000 * history["train_seconds"] / steps, "faults_per_step": faults / steps,
            "last_loss": history["step_losses"][-1]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--models", default="dae,vae,bae")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # a subprocess's own run: MODEL keep|default
    args = p.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one[0], args.one[1] == "keep", args.steps, args.data_dir, args.threads)))
        return
    for model in args.models.split(","):
        runs = {"keep": [], "default": []}
        for r in range(args.rounds):
            for arm in (("keep", "default") if r % 2 == 0 else ("default", "keep")):
                cmd = [sys.executable, __file__, "--data-dir", args.data_dir, "--steps", str(args.steps),
                       "--threads", str(args.threads), "--one", model, arm]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                runs[arm].append(json.loads(out.strip().splitlines()[-1]))  # after train.train's epoch line
        for arm, rs in runs.items():
            print(f"{model} {arm:7}: ms a step " + " / ".join(f"{x['ms_per_step']:.1f}" for x in rs)
                  + f" (median {statistics.median(x['ms_per_step'] for x in rs):.1f}), page faults a step "
                  + " / ".join(f"{x['faults_per_step']:.0f}" for x in rs) + f", last loss {rs[0]['last_loss']:.6f}",
                  flush=True)


if __name__ == "__main__":
    main()
