"""Milliseconds a training step takes in float32 and under bf16 autocast, on this machine, now.

    python tests/step_precision.py [--threads 2] [--models bae,dae,vae]

Not collected by pytest. For each model and batch size (32, 128) it builds the model, its loss and
a fused Adam as train.py does, warms up, then times the two precisions in turns, five rounds of
five steps each, and prints the best round of each (so a busy machine slows both alike) and their
ratio. It says what --precision auto should pick only where the CPU has bfloat16 matrix units: an
AMD EPYC without AMX has AVX-512 bf16 instructions, which speed up a large matmul but not these
small convolutions (docs/experiments.md).
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ae  # noqa: E402
import data  # noqa: E402

LOSSES = {"bae": ae.bae_loss, "dae": lambda m, x: ae.dae_loss(m, x, 0.2), "vae": ae.vae_loss}


def step_function(name, batch_size, precision):
    torch.manual_seed(0)
    model = ae.MODELS[name](10)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, fused=True)
    x = data.variance_batch(torch.rand(batch_size, 1, 28, 28))
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16")

    def step():
        with autocast:
            loss = LOSSES[name](model, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for _ in range(3):
        step()
    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default="bae,dae,vae")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads, oneDNN ISA limit {os.environ.get('ONEDNN_MAX_CPU_ISA', 'none')}")
    for name in args.models.split(","):
        for batch_size in (32, 128):
            steps = {precision: step_function(name, batch_size, precision) for precision in ("fp32", "bf16")}
            best = dict.fromkeys(steps, float("inf"))
            for _ in range(5):
                for precision, step in steps.items():
                    t = time.perf_counter()
                    for _ in range(5):
                        step()
                    best[precision] = min(best[precision], (time.perf_counter() - t) / 5 * 1000)
            print(f"{name} batch {batch_size:3d}: fp32 {best['fp32']:6.1f} ms, bf16 {best['bf16']:6.1f} ms, "
                  f"fp32 / bf16 {best['fp32'] / best['bf16']:.2f}", flush=True)


if __name__ == "__main__":
    main()
