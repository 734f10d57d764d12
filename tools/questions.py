"""The runs behind docs/questions.md: the VAE trained the ways learners ask about, each read out.

    python tools/questions.py --data-dir /path/to/mnist --seeds 0,1,2 --json docs/data/questions.json
    python tools/questions.py --data-dir /path/to/mnist --only sample-codes --runs runs/benchmark

Not collected by pytest. Each arm trains the default VAE (train.py's settings and train.train, one
thread, --jobs at a time) with one change that train.py has no flag for, patched in for that run:

  pixel-mean   the reconstruction term averaged over the 784 pixels instead of summed, the KL still
               summed over the code: a KL weighed 784 times more than in the -ELBO
  no-floor     no floor on the decoder's log-variance (train.py stops once the loss is not finite)
  gaussian-mnist, bernoulli-mnist   the VAE on MNIST's grey pixels, with its Gaussian likelihood or
               with a Bernoulli one (binary cross-entropy on the decoder's mean channel as logits)

and reports the linear probe (validation and test), the KL of each code dimension on the test
images, the active units, the last epoch's losses, and where a run went non-finite. sample-codes
reads saved runs instead (--runs: a benchmark's folder of default VAE runs): the probe on one
sample z ~ q(z | x) of each image against the probe on the posterior mean.
"""

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

ARMS = {"default": [], "pixel-mean": [], "no-floor": [], "gaussian-mnist": ["--dataset", "mnist"],
        "bernoulli-mnist": ["--dataset", "mnist"]}


def patch(arm, ae, F):
    # The change each arm makes to ae.py's VAE for its run (ae's own functions otherwise)
    if arm == "pixel-mean":
        def vae_loss(model, x, kl_weight=1.0):
            kl, nll = ae.neg_elbo_terms(model, x)
            return (kl_weight * kl.sum(dim=1) + nll.flatten(1).mean(dim=1)).mean()  # mean, not sum, over pixels
        ae.vae_loss = vae_loss
    if arm == "no-floor":
        def decode(self, z):
            return self.dec_heads(self.decoder(z)).chunk(2, dim=1)  # the raw log-variance, no floor
        ae.VAE.decode = decode
    if arm == "bernoulli-mnist":
        def vae_loss(model, x, kl_weight=1.0):
            mu_z, logvar_z = model.encode_dist(x)
            logits, _ = model.decode(ae.reparameterize(mu_z, logvar_z))  # the mean channel, read as logits
            nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)
            return (kl_weight * ae.kl_to_standard_normal(mu_z, logvar_z) + nll).mean()
        ae.vae_loss = vae_loss


def one_run(arm, seed, data_dir, out):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(1)
    import ae
    import evaluate
    import train
    patch(arm, ae, F)
    args = train.get_parser().parse_args(["--model", "vae", "--seed", str(seed), "--device", "cpu", "--data-dir",
                                          data_dir, "--out", out, "--force", *ARMS[arm]])
    config, device, _, _ = train.settings(args)
    torch.manual_seed(seed)
    train_images, _ = train.data.load_mnist(data_dir, train=True)
    test_images, _ = train.data.load_mnist(data_dir, train=False)
    os.makedirs(out, exist_ok=True)
    model = ae.VAE(config["n_components"])
    result = {"arm": arm, "seed": seed, "config": config}
    try:
        history = train.train(model, config, train_images, test_images, out)
        result.update(final_loss=history["loss_history"][-1], test_loss=history["test_loss_history"][-1])
    except train.TrainingStopped as e:  # the last good state is in resume.pt: read its losses
        state = torch.load(os.path.join(out, "resume.pt"), weights_only=True)
        steps = state["history"]["step_losses"]  # the finished epochs' steps, all finite
        result.update(stopped=str(e).split(";")[0], epochs_done=state["epoch"], lowest_loss=min(steps, default=None))
        return result
    model.eval()
    splits = evaluate.load_splits(data_dir, config["train_size"])
    (_, codes_test), metrics = evaluate.codes_and_readouts(model, config, splits, device, False)
    with torch.no_grad():  # the KL of each code dimension, averaged over the test images
        mu, logvar = torch.cat([torch.stack(model.encode_dist(x)) for _, x in
                                evaluate.fixed_inputs(splits.test_images, config["dataset"], "cpu",
                                                      evaluate.SEEDS["test"])], dim=1)
        kl = ae.kl_to_standard_normal(mu, logvar, per_dimension=True).mean(0)
    result.update(validation=metrics["probe_validation_accuracy"], test=metrics["probe_test_accuracy"],
                  few_labels=metrics["probe_few_labels"], active_units=metrics["active_units"],
                  kl_per_dimension=sorted(kl.tolist(), reverse=True),
                  test_loss_by_epoch=history["test_loss_history"])
    if config["dataset"] == "variance":  # the decoder's log-variance where the digit is and where it is not
        s = test_images[:500]
        with torch.no_grad():
            x = next(evaluate.fixed_inputs(s, "variance", "cpu", evaluate.SEEDS["test"], 500))[1]
            _, logvar = model.decode(model.encode_dist(x)[0])
        background = (s == 0).view_as(logvar)
        result["decoder_logvar_500_test_images"] = {
            "median_background": logvar[background].median().item(), "lowest": logvar.min().item(),
            "median_strokes": logvar[~background].median().item()}
    return result


def sample_codes(runs):
    # The probe on one sample z = mu + sigma * eps of q(z | x) per image (train and test alike, the
    # evaluation's fixed noise), against the probe on the posterior mean, for each saved default VAE
    import torch
    import ae
    import evaluate
    rows = []
    for name in sorted(os.listdir(runs)):
        if not (name.startswith("vae-variance-default") and os.path.exists(os.path.join(runs, name, "model.pt"))):
            continue
        model, config, _ = evaluate.load_model(os.path.join(runs, name, "model.pt"))
        model.eval()
        splits = evaluate.load_splits(DATA_DIR, config["train_size"])
        codes = {}
        for part, images, seed in (("train", splits.train_images, "train"), ("test", splits.test_images, "test")):
            gen, means, samples = torch.Generator().manual_seed(evaluate.SEEDS["quality"]), [], []
            with torch.no_grad():
                for _, x in evaluate.fixed_inputs(images, config["dataset"], "cpu", evaluate.SEEDS[seed]):
                    mu, logvar = model.encode_dist(x)
                    means.append(mu)
                    samples.append(ae.reparameterize(mu, logvar, gen))
            codes[part] = torch.cat(means), torch.cat(samples)
        row = {"run": name, "seed": config["seed"]}
        for i, what in enumerate(("mean", "sample")):
            row[what] = evaluate.probe_accuracy(codes["train"][i], splits.train_labels, codes["test"][i],
                                                splits.test_labels)
            row[what + "_validation"] = evaluate.probe_validation_accuracy(codes["train"][i], splits.train_labels)
        print(f"{name}: probe on the mean {row['mean']:.2%}, on a sample {row['sample']:.2%} (validation "
              f"{row['mean_validation']:.2%} / {row['sample_validation']:.2%})", flush=True)
        rows.append(row)
    return rows


DATA_DIR = None


def main():
    global DATA_DIR
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--only", help="comma-separated arms (and/or sample-codes); default: all")
    p.add_argument("--runs", default=os.path.join(REPO, "runs", "benchmark"), help="sample-codes: saved runs")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="/tmp/questions")
    p.add_argument("--json")
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    DATA_DIR = args.data_dir
    if args.one:
        print(json.dumps(one_run(args.one[0], int(args.one[1]), args.data_dir,
                                 os.path.join(args.out, f"{args.one[0]}-{args.one[1]}"))))
        return
    wanted = args.only.split(",") if args.only else list(ARMS) + ["sample-codes"]
    jobs = [(arm, int(s)) for arm in ARMS if arm in wanted for s in args.seeds.split(",")]

    def launch(job):
        proc = subprocess.run([sys.executable, __file__, "--data-dir", args.data_dir, "--out", args.out, "--one",
                               job[0], str(job[1])], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{job} failed:\n{proc.stderr[-2000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(r), flush=True)
        return r

    with ThreadPoolExecutor(args.jobs) as pool:
        results = {"runs": list(pool.map(launch, jobs))}
    if "sample-codes" in wanted:
        results["sample_codes"] = sample_codes(args.runs)
    results["command"] = " ".join(sys.argv)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
