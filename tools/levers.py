"""The speed levers of train.py, each on and off: paired training times of the same run.

    python tools/levers.py --data-dir /path/to/mnist --model dae \\
        --arm "fp32: --precision fp32" --arm "onednn: --precision fp32-onednn" --pairs 3
    python tools/levers.py --data-dir /path/to/mnist --model vae --as-avx2 \\
        --arm "kept: " --arm "returned: +return-freed-memory" --pairs 3

Not collected by pytest. Each arm is a label and train.py flags; the arms run in turn (A B A B ...,
so a drift of the machine's speed hits them alike), each a fresh `python train.py --model M
--no-eval --force` with those flags, and the script reads the training seconds the run prints
("trained in X s"). Prints every run, then each arm's median and the ratio of each arm to the
first, pair by pair (median, min, max). --as-avx2 limits ATen's, oneDNN's and MKL's kernels to AVX2,
as on a processor without AVX-512 (benchmark.AVX2). A "+return-freed-memory" among an arm's flags
runs train.py with glibc's default malloc (train.keep_freed_memory switched off); "+flush-denormals"
with subnormal floats computed as zero (torch.set_flush_denormal). --json writes it all.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from benchmark import AVX2  # noqa: E402

PATCH = {"+return-freed-memory": "train.keep_freed_memory = lambda: False",
         "+flush-denormals": "train.torch.set_flush_denormal(True)"}


def train_seconds(model, flags, out, data_dir, env):
    patches = [PATCH[f] for f in flags if f.startswith("+")]
    flags = [f for f in flags if not f.startswith("+")]
    prog = (f"import sys; sys.path.insert(0, {REPO!r}); import train\n" + "\n".join(patches)
            + "\nsys.exit(train.main(sys.argv[1:]))")
    cmd = [sys.executable, "-c", prog, "--model", model, "--no-eval", "--force", "--out", out,
           "--data-dir", data_dir, *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"levers.py: {' '.join(cmd[3:])} failed:\n{proc.stderr}")
    return float(re.search(r"trained in ([0-9.]+) s", proc.stdout).group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=os.path.join(REPO, "data"))
    p.add_argument("--model", required=True, choices=["bae", "dae", "vae"])
    p.add_argument("--arm", action="append", required=True, help="'label: train.py flags'; the first is the base")
    p.add_argument("--pairs", type=int, default=3, help="runs of each arm (default 3)")
    p.add_argument("--as-avx2", action="store_true", help="limit every kernel library to AVX2")
    p.add_argument("--json", help="write the runs and ratios here")
    args = p.parse_args()
    arms = [(a.split(":", 1)[0].strip(), a.split(":", 1)[1].split()) for a in args.arm]
    env = dict(os.environ, **(AVX2 if args.as_avx2 else {}))
    seconds = {label: [] for label, _ in arms}
    with tempfile.TemporaryDirectory() as scratch:
        for i in range(args.pairs):
            for label, flags in arms:
                s = train_seconds(args.model, flags, os.path.join(scratch, label), args.data_dir, env)
                seconds[label].append(s)
                print(f"{args.model} {label:>12} run {i + 1}: {s:7.1f} s", flush=True)
    base = arms[0][0]
    result = {"model": args.model, "as_avx2": args.as_avx2, "arms": dict(arms), "seconds": seconds, "ratio": {}}
    for label, _ in arms:
        ratios = [a / b for a, b in zip(seconds[label], seconds[base])]
        result["ratio"][label] = ratios
        print(f"{args.model} {label:>12}: median {statistics.median(seconds[label]):7.1f} s, / {base}: "
              f"median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
