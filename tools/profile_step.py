"""Where a training step's time goes: torch.profiler over the steps of a model's default training.

    python tools/profile_step.py --model dae                 # this processor
    python tools/profile_step.py --model dae --as-avx2       # limited to AVX2, as on most laptops

Not collected by pytest. Trains the model's default settings (train.py's make_config and loss, the
same batch, Adam and speed settings as train.train, on random MNIST-like images) for --warmup steps,
then profiles --steps more and prints the operators that took the most time (self CPU time, forward
and backward apart: autograd's backward nodes are named after the forward operator), the share of
the step each took, and the step's milliseconds. --as-avx2 runs it with ATen's, oneDNN's and MKL's
kernels limited to AVX2 (benchmark.AVX2, set as benchmark.py is imported); --flags passes train.py flags
(e.g. "--batch-size 128"); --threads sets torch's threads (default: torch's, 2 on the project's machine).
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)
import benchmark  # noqa: E402, F401  (with --as-avx2 it runs this script again, limited to AVX2, before torch loads)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, choices=["bae", "dae", "vae"])
    p.add_argument("--flags", default="", help="train.py flags, e.g. '--batch-size 128'")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--threads", type=int)
    p.add_argument("--as-avx2", action="store_true")
    args = p.parse_args()

    import torch
    import data
    import train
    if args.threads:
        torch.set_num_threads(args.threads)
    config = train.make_config(train.get_parser().parse_args(["--model", args.model, *args.flags.split()]))
    config["precision"] = train.choose_precision(config["precision"], torch.device("cpu"))
    torch.manual_seed(0)
    model = __import__("ae").MODELS[args.model](config["n_components"])
    loss_fn = train.loss_function(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], betas=(0.9, 0.99), fused=True)
    images = torch.randint(0, 256, (config["batch_size"] * 8, 1, 28, 28), dtype=torch.uint8)
    total = args.warmup + args.steps

    def step(i):
        x = data.make_batch(images[(i % 8) * config["batch_size"]:][:config["batch_size"]], config["dataset"])
        loss = loss_fn(model, x, i, total)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    with train.faster_step(config):
        for i in range(args.warmup):
            step(i)
        t0 = time.perf_counter()
        for i in range(args.warmup, total):
            step(i)
        ms = (time.perf_counter() - t0) / args.steps * 1000
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for i in range(args.warmup, total):
                step(i)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    whole = sum(e.self_cpu_time_total for e in events)
    print(f"{args.model} {' '.join(args.flags.split())} batch {config['batch_size']}, {config['precision']}, "
          f"{torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}: {ms:.1f} ms a step "
          f"(unprofiled); self CPU time by operator, {args.steps} steps:")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.rows]:
        print(f"  {e.self_cpu_time_total / whole:6.1%}  {e.self_cpu_time_total / args.steps / 1000:7.2f} ms  "
              f"{e.count // args.steps:4d}x  {e.key}")


if __name__ == "__main__":
    main()
