"""Milliseconds a training step takes in each --precision, on this machine, now.

    python tests/step_precision.py [--threads 2] [--models bae,dae,vae] [--batch-sizes 32,64,128]

Not collected by pytest. For each model and batch size it builds the model, its loss and a fused
Adam as train.py does, warms up, then times fp32, onednn-bf16 (float32 tensors, oneDNN allowed
bfloat16 instructions: train.onednn_bf16) and bf16 (autocast) in turns, five rounds of five steps
each, and prints the best round of each (so a busy machine slows all alike) and the ratios to fp32.
It also prints how far a 128 x 6400 by 6400 x 250 matrix product (the DAE's widest layer) is from
float64 in each precision, beside float32's own rounding and bfloat16's: on a processor with
AVX-512 bf16 but no AMX, onednn-bf16 comes out near float32, not near bfloat16 (docs/experiments.md).
Run it with ONEDNN_MAX_CPU_ISA=AVX512_CORE to see the same processor without its bf16 instructions.
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ae  # noqa: E402
import data  # noqa: E402
import train  # noqa: E402

LOSSES = {"bae": ae.bae_loss, "dae": lambda m, x: ae.dae_loss(m, x, 0.2), "vae": ae.vae_loss}
PRECISIONS = ("fp32", "onednn-bf16", "bf16")


def step_function(name, batch_size, precision):
    torch.manual_seed(0)
    model = ae.MODELS[name](10)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, fused=True)
    x = data.variance_batch(torch.rand(batch_size, 1, 28, 28))
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16")

    def step():
        with train.onednn_bf16(precision == "onednn-bf16"):
            with autocast:
                loss = LOSSES[name](model, x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for _ in range(3):
        step()
    return step


def matmul_errors():
    # the largest error of each precision's product, relative to the largest entry of the exact one
    torch.manual_seed(0)
    a, w = torch.randn(128, 6400, dtype=torch.float64), torch.randn(250, 6400, dtype=torch.float64)
    exact = a @ w.T
    errors = {"float32 inputs, exact product": a.float().double() @ w.float().double().T,
              "bfloat16 inputs, exact product": a.bfloat16().double() @ w.bfloat16().double().T}
    for precision in ("fp32", "onednn-bf16"):
        with train.onednn_bf16(precision == "onednn-bf16"):
            errors[precision] = (a.float() @ w.float().T).double()
    with torch.autocast("cpu", torch.bfloat16):
        errors["bf16"] = (a.float() @ w.float().T).double()
    scale = exact.abs().max()
    return {k: ((v - exact).abs().max() / scale).item() for k, v in errors.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default="bae,dae,vae")
    p.add_argument("--batch-sizes", default="32,128")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train.keep_freed_memory()  # as train.run does
    print(f"{args.threads} threads, oneDNN ISA limit {os.environ.get('ONEDNN_MAX_CPU_ISA', 'none')}, "
          f"--precision auto here: {train.choose_precision('auto', torch.device('cpu'))}")
    print("a 128 x 6400 x 250 product's largest error, relative to its largest entry: "
          + ", ".join(f"{k} {v:.1e}" for k, v in matmul_errors().items()), flush=True)
    for name in args.models.split(","):
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            steps = {precision: step_function(name, batch_size, precision) for precision in PRECISIONS}
            best = dict.fromkeys(steps, float("inf"))
            for _ in range(5):
                for precision, step in steps.items():
                    t = time.perf_counter()
                    for _ in range(5):
                        step()
                    best[precision] = min(best[precision], (time.perf_counter() - t) / 5 * 1000)
            print(f"{name} batch {batch_size:3d}: " + ", ".join(f"{k} {v:6.1f} ms" for k, v in best.items())
                  + "; fp32 / " + ", fp32 / ".join(f"{k} {best['fp32'] / best[k]:.2f}" for k in PRECISIONS[1:]),
                  flush=True)


if __name__ == "__main__":
    main()
