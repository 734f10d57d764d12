"""The input baselines on a cold cache, this checkout's code against an older commit's: the time,
the accuracies, and each 784-pixel fit's number of loss evaluations and final loss. Not a test.

    python tests/baseline_timing.py --old 2c8d9bd --data-dir /path/to/mnist

Each version computes the baselines of mnist and variance (K = 10) into a fresh temporary copy of
the MNIST folder (links to its four files), so nothing is cached; run it with nothing else running
to compare times (docs/robustness.md has its numbers).
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_version(commit, folder):
    # evaluate.py, ae.py and data.py as they were at `commit`, imported under their own names
    for name in ("evaluate", "ae", "data"):
        with open(os.path.join(folder, name + ".py"), "wb") as f:
            f.write(subprocess.check_output(["git", "-C", REPO, "show", f"{commit}:{name}.py"]))
    return load_module(folder)


def load_module(folder):
    for name in ("data", "ae", "evaluate"):
        sys.modules.pop(name, None)
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location("evaluate", os.path.join(folder, "evaluate.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def cold_baselines(evaluate, data_dir, dataset):
    # the fits' loss evaluations, recorded as L-BFGS asks for them
    fits, step = [], torch.optim.LBFGS.step

    def recording(self, closure):
        losses = []
        fits.append(losses)
        return step(self, lambda: losses.append(closure()) or losses[-1])

    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "MNIST", "raw"))
        for name in os.listdir(os.path.join(data_dir, "MNIST", "raw")):
            os.symlink(os.path.join(data_dir, "MNIST", "raw", name), os.path.join(tmp, "MNIST", "raw", name))
        splits = evaluate.load_splits(tmp)
        torch.optim.LBFGS.step = recording
        try:
            t0 = time.perf_counter()
            result = evaluate.cached_input_baselines(tmp, splits, dataset, 10)
            seconds = time.perf_counter() - t0
        finally:
            torch.optim.LBFGS.step = step
    # the first fits are the 784-pixel ones (pixels, then their squares), the last the PCA's
    pixel_fits = [{"evaluations": len(f), "final_loss": min(loss.item() for loss in f)} for f in fits[:-1]]
    return {"seconds": round(seconds, 1), **result, "pixel_fits": pixel_fits}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", default="2c8d9bd", help="the commit to compare with (default: 2c8d9bd)")
    p.add_argument("--data-dir", default=os.path.join(REPO, "data"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        versions = {args.old: load_version(args.old, tmp), "this checkout": load_module(REPO)}
        for dataset in ("mnist", "variance"):
            for name, module in versions.items():
                print(json.dumps({"version": name, "dataset": dataset,
                                  **cold_baselines(module, args.data_dir, dataset)}), flush=True)


if __name__ == "__main__":
    main()
