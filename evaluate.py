"""Evaluate a trained autoencoder: what its codes know, how good its outputs are, and pictures.

    python evaluate.py runs/vae-variance/model.pt      # train.py runs this after training

Every number comes beside what gives it meaning:
- the linear probe's test accuracy on the K-number codes, beside the same probe on the input pixels,
  on their squares (varianceMNIST), on a K-dimensional PCA of the pixels, and on the codes of the
  same encoder before training;
- the BAE's reconstruction error beside PCA's with the same K; the DAE's denoising error beside the
  Bayes-optimal denoiser's; the VAE's -ELBO beside its own -log p(x) (importance sampled) and the
  true generative model's negative log-likelihood.

Writes beside the checkpoint, so evaluating a saved model again reproduces its folder:
    metrics.json                        all the numbers, the loss history, timings, config, versions
    codes_{train,test}.npy, labels_{train,test}.npy     the K-dim codes, to check the probe yourself
    pca_test.npy, pca_test.ppm/.png     the test codes projected to 2-D by PCA, one colour per digit
    recon.pgm/.png                      test digits and what the model makes of them, row by row
    interpolation.pgm/.png              decoded straight lines between the codes of two digits
    samples.pgm/.png, traversal.pgm/.png (VAE)   samples of the prior; each code dimension swept

Read it in this order: the probe, PCA, the codes (and adapt_batchnorm for the DAE), the baselines,
the quality numbers, the pictures, and evaluate_checkpoint, which runs them all (the scatter plot of
the PCA is drawn below the line). Below the marked
line: files (atomic writes, checkpoints, image formats) and the command line. Everything but
evaluate_checkpoint and main (which rebuild the model with ae.py and read MNIST with data.py) needs
only torch, torchvision and numpy, so the probe, the PCA and the pictures can be copied out alone.
"""

import argparse
import copy
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.utils import make_grid, save_image

# Evaluation noise comes from CPU generators with these seeds, one per use, so every device sees
# the same numbers and the training and test images never share a noise field.
# "model": the DAE's corruption, the VAE's samples and the pictures' noise; "likelihood": the samples
# of z for the importance-sampled -log p(x).
SEEDS = {"train": 2024, "test": 2025, "model": 2026, "likelihood": 2027}


# -------------------------------------------------------------------------------------------------
# The linear probe: multinomial logistic regression, fitted by L-BFGS on the training codes.
#
# The usual test of a representation: freeze the encoder, fit a linear classifier on the codes of
# the training images, report its accuracy on the test images. If a linear map of K numbers
# recovers the digit, the code holds the digit's shape.


def fit_probe(codes, labels, n_classes=10, l2=1e-4, max_iter=200):
    """Returns a function codes -> predicted labels. Codes (N, K) float, labels (N,) int64."""
    # Standardise each code dimension with the training statistics, so that L-BFGS meets a
    # well-conditioned problem and the small L2 penalty weighs every dimension alike, whatever
    # scale the encoder gave it. float64 on the CPU makes the fit deterministic and accurate,
    # whatever device trained the model.
    X = codes.detach().double().cpu()
    mean, std = X.mean(0), X.std(0).clamp_min(1e-12)
    X, y = (X - mean) / std, labels.cpu()
    W = torch.zeros(X.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        # cross-entropy of softmax(X W + b), plus a small L2 penalty so that the optimum is finite
        # even when the classes are separable
        loss = F.cross_entropy(X @ W + b, y) + l2 * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    W, b = W.detach(), b.detach()
    return lambda c: ((c.detach().double().cpu() - mean) / std @ W + b).argmax(1)


def accuracy(predict, codes, labels):
    return (predict(codes) == labels.cpu()).double().mean().item()


def probe_accuracy(train_codes, train_labels, test_codes, test_labels):
    return accuracy(fit_probe(train_codes, train_labels), test_codes, test_labels)


# -------------------------------------------------------------------------------------------------
# PCA: the eigenvectors of the covariance matrix of the centred data.


def pca(X, k):
    """Returns (mean (D,), components (k, D)) of the rows of X (N, D), in float64.

    Project with (X - mean) @ components.T."""
    X = X.double()  # float64: forming Xc^T Xc below squares the condition number
    mean = X.mean(0)
    Xc = X - mean  # (N, D)
    # The principal directions are the eigenvectors of the covariance Xc^T Xc / (N - 1), and the
    # variance along each is its eigenvalue. (They are also the right singular vectors of Xc; the
    # D x D eigenproblem gives the same answer faster when N >> D, as for MNIST's 60000 x 784.)
    _, V = torch.linalg.eigh(Xc.T @ Xc)  # eigenvalues ascending; the columns of V are the directions
    components = V[:, -k:].flip(1).T  # (k, D), the largest variance first
    # A direction's sign is arbitrary; fix it (largest entry positive) so results are repeatable.
    signs = torch.sign(components.gather(1, components.abs().argmax(1, keepdim=True)))  # (k, 1)
    return mean, components * signs


# -------------------------------------------------------------------------------------------------
# The codes: of the data itself (MNIST, or clean varianceMNIST), one fixed draw per image.


def fixed_inputs(images_uint8, dataset, device, seed, chunk=1000):
    """Yields (s, x) chunks: intensities s in [0, 1] and the model input x, on `device`.

    varianceMNIST noise comes from a CPU generator seeded with `seed` and is then moved to the
    device, so every device evaluates on exactly the same numbers.
    """
    gen = torch.Generator().manual_seed(seed)
    for part in images_uint8.split(chunk):
        s = part.float() / 255.0
        x = s * torch.randn(s.shape, generator=gen) if dataset == "variance" else s
        yield s.to(device), x.to(device)


def flat_inputs(images_uint8, dataset, seed):
    return torch.cat([x.flatten(1) for _, x in fixed_inputs(images_uint8, dataset, "cpu", seed)])  # (N, 784), CPU


@torch.no_grad()
def codes_of(model, images_uint8, dataset, device, seed):
    return torch.cat([model.encode(x).cpu() for _, x in fixed_inputs(images_uint8, dataset, device, seed)])  # (N, K)


# The DAE's encoder only ever sees corrupted images x~ in training, so the running statistics of
# its BatchNorm layers (the mean and variance each subtracts and divides by in eval mode) are those
# of x~, whose pixels have variance s^2 + sigma_n^2. The codes we study are those of the data
# itself, clean images x with pixel variance s^2. Fed x, the encoder would normalise with x~'s
# numbers and hand the next layer smaller activations than it was trained on. Re-estimating the
# statistics from clean images fixes that without changing a weight: "AdaBN" (Li et al.,
# "Revisiting batch normalization for practical domain adaptation", 2016). It is done on a copy,
# so the model itself, a denoiser of x~, keeps the statistics of x~ (docs/experiments.md measures
# the difference it makes).


@torch.no_grad()
def adapt_batchnorm(model, batches):
    """Re-estimate the running mean and variance of the encoder's BatchNorm layers from `batches`.

    `batches` is an iterable of inputs (B, 1, 28, 28); the statistics become the average of their
    batch statistics. Only the BatchNorm buffers change. Returns the model.
    """
    norms = [m for m in model.encoder.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None: a plain average over all the batches, not a running one
    was_training = model.training
    model.train()  # in train mode, BatchNorm updates its running statistics as it goes
    try:
        for x in batches:
            model.encode(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return model


def encoder_for_codes(model, train_images, dataset, device):
    """A copy of `model` with its encoder's BatchNorm statistics estimated on 10000 clean training
    inputs: for an encoder that was not trained on them (the DAE's, an untrained one)."""
    copied = copy.deepcopy(model)
    batches = (x for _, x in fixed_inputs(train_images[:10000], dataset, device, SEEDS["train"]))
    return adapt_batchnorm(copied, batches)


# -------------------------------------------------------------------------------------------------
# Baselines: the same probe on what the encoder starts from.
#
# In varianceMNIST every pixel has mean 0 whatever the digit, so a linear readout of the pixels
# x sees almost nothing; the digit is in x^2, whose mean is s^2, and a linear readout of x^2 sees a
# lot. An encoder has to compute something like x^2 to find the digit. The untrained encoder (its
# initial weights for the run's seed, BatchNorm statistics estimated on the data) says how much of
# the probe's accuracy comes from the architecture alone, and the rest from training.


def input_baselines(train_x, train_labels, test_x, test_labels, dataset, k):
    """Probe test accuracies on the inputs (N, 784): pixels, pixels_squared (varianceMNIST), pca."""
    result = {"pixels": probe_accuracy(train_x, train_labels, test_x, test_labels)}
    if dataset == "variance":
        result["pixels_squared"] = probe_accuracy(train_x ** 2, train_labels, test_x ** 2, test_labels)
    mean, comps = pca(train_x, k)  # fitted on the training inputs
    result["pca"] = probe_accuracy((train_x.double() - mean) @ comps.T, train_labels,
                                   (test_x.double() - mean) @ comps.T, test_labels)
    return result


def untrained_model(model_class, config):
    # The model exactly as train.py initialised it: the same seed, then the same constructor, on
    # the CPU. fork_rng leaves the caller's random generators as they were.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        return model_class(config["n_components"])


# -------------------------------------------------------------------------------------------------
# Quality of the outputs, each beside a baseline or the optimum.


@torch.no_grad()
def bae_quality(model, config, train_images, test_images, device):
    # Reconstruction MSE in [0, 1] pixel units, beside PCA with the same K: the best any *linear*
    # K-dimensional code can do, and the baseline the nonlinear autoencoder has to beat.
    k, dataset = config["n_components"], config["dataset"]
    sq, pca_sq, n = 0.0, 0.0, test_images.shape[0] * 784
    mean, comps = pca(flat_inputs(train_images, dataset, SEEDS["train"]), k)  # fitted on the training inputs
    for _, x in fixed_inputs(test_images, dataset, device, SEEDS["test"]):
        sq += (model(x) - x).pow(2).sum().item()
        xf = x.cpu().flatten(1).double()  # (B, 1, 28, 28) -> (B, 784)
        recon = (xf - mean) @ comps.T @ comps + mean  # project onto the K directions and back
        pca_sq += (recon - xf).pow(2).sum().item()
    return {"test_mse": sq / n, "pca_test_mse": pca_sq / n}


@torch.no_grad()
def dae_quality(model, config, test_images, device, randn_like):
    # Denoising MSE beside the Bayes-optimal denoiser that knows each pixel's true variance s^2:
    #     g*(x~) = x~ * s^2 / (s^2 + sigma_n^2)      (derived in ae.py)
    # The ratio is >= 1 up to sampling noise; 1 means the DAE denoises as well as possible.
    sigma_n, sq, oracle_sq, n = config["noise_std"], 0.0, 0.0, test_images.shape[0] * 784
    for s, x in fixed_inputs(test_images, config["dataset"], device, SEEDS["test"]):
        x_noisy = x + sigma_n * randn_like(x)
        sq += (model(x_noisy) - x).pow(2).sum().item()
        oracle = x_noisy * s.pow(2) / (s.pow(2) + sigma_n ** 2) if sigma_n > 0 else x_noisy
        oracle_sq += (oracle - x).pow(2).sum().item()
    metrics = {"test_mse": sq / n}
    if config["dataset"] == "variance" and sigma_n > 0:  # the oracle assumes varianceMNIST
        metrics.update(oracle_mse=oracle_sq / n, mse_over_oracle=sq / oracle_sq)
    return metrics


def oracle_nll(s, min_logvar):
    # The expected negative log-likelihood of the true generative model of varianceMNIST with the
    # VAE's variance floor, pixel variance v = max(s^2, exp(min_logvar)), per image (B,):
    #     E_x[-log N(x | 0, v)] = 1/2 * sum_i (log v_i + s_i^2 / v_i)      (since E[x_i^2] = s_i^2)
    # No model with this floor can beat it on average, so the gap is what the VAE still misses.
    v = s.pow(2).clamp_min(np.exp(min_logvar))
    return 0.5 * (v.log() + s.pow(2) / v).flatten(1).sum(1)


@torch.no_grad()
def vae_quality(model, config, test_images, device, randn_like, is_images, is_samples, ae):
    # Negative ELBO per test image (nats, without the 784/2 log 2pi constant), one fixed sample of
    # z per image, beside the true model's expected negative log-likelihood (oracle_nll). `ae` is
    # the module ae.py, passed in so that this file imports nothing of the project at the top.
    kl = nll = oracle = 0.0
    for s, x in fixed_inputs(test_images, config["dataset"], device, SEEDS["test"]):
        mu_z, logvar_z = model.encode_dist(x)
        z = mu_z + torch.exp(0.5 * logvar_z) * randn_like(mu_z)  # z = mu + sigma * eps
        mu_x, logvar_x = model.decode(z)
        kl += ae.kl_to_standard_normal(mu_z, logvar_z).sum().item()
        nll += ae.gaussian_nll(x, mu_x, logvar_x).sum().item()
        oracle += oracle_nll(s, model.min_logvar.item()).sum().item()
    n = test_images.shape[0]
    metrics = {"test_neg_elbo": (kl + nll) / n, "test_kl": kl / n, "test_nll": nll / n}
    if config["dataset"] == "variance":
        metrics["oracle_nll"] = oracle / n
    # The two gaps, on the first `is_images` test images: -ELBO >= -log p(x) (the bound's slack,
    # from q(z | x) not being the true posterior) >= the true model's NLL (what the model misses).
    gen = torch.Generator().manual_seed(SEEDS["likelihood"])
    neg_log_p = neg_elbo = subset_oracle = 0.0
    for s, x in fixed_inputs(test_images[:is_images], config["dataset"], device, SEEDS["test"], chunk=100):
        nlp, nelbo = ae.importance_sampled_nll(model, x, is_samples, generator=gen)
        neg_log_p, neg_elbo = neg_log_p + nlp.sum().item(), neg_elbo + nelbo.sum().item()
        subset_oracle += oracle_nll(s, model.min_logvar.item()).sum().item()
    m = min(is_images, n)
    metrics.update(subset_size=m, is_samples=is_samples, subset_neg_elbo=neg_elbo / m, test_nll_is=neg_log_p / m)
    if config["dataset"] == "variance":
        metrics["subset_oracle_nll"] = subset_oracle / m
    return metrics


# -------------------------------------------------------------------------------------------------
# Pictures: rows of digits, tiled by torchvision's make_grid.


def to_unit(images, signed=False):
    # Pixel values for a picture, in [0, 1]: intensities as they are; signed images (varianceMNIST
    # pixels) map [-1, 1] -> [0, 1], so that 0 is mid-grey.
    images = images.detach().float().cpu()
    return ((images + 1) / 2 if signed else images).clamp(0, 1)


def grid(rows):
    # rows: a list of (n, 1, 28, 28) tensors in [0, 1], one row of the picture each
    return make_grid(torch.cat(rows), nrow=rows[0].shape[0], padding=2, pad_value=1.0)  # (3, H, W)


@torch.no_grad()
def recon_rows(model, config, s, x, randn_like):
    """Rows for recon.pgm, top to bottom as listed in the comments; s, x: (10, 1, 28, 28)."""
    signed = config["dataset"] == "variance"
    rows = [to_unit(s)]  # the MNIST digits
    if signed:
        rows.append(to_unit(x, signed=True))  # the varianceMNIST input
    if config["model"] == "bae":
        rows.append(to_unit(model(x), signed))  # reconstruction
    elif config["model"] == "dae":
        x_noisy = x + config["noise_std"] * randn_like(x)
        mask = model.mask(x_noisy)
        rows += [to_unit(x_noisy, signed), to_unit(x_noisy * mask, signed), to_unit(mask)]  # x~, x~ * m, m
        if signed and config["noise_std"] > 0:  # the optimal mask s^2 / (s^2 + sigma_n^2)
            rows.append(to_unit(s.pow(2) / (s.pow(2) + config["noise_std"] ** 2)))
    else:
        mu_z, logvar_z = model.encode_dist(x)
        mu_x, logvar_x = model.decode(mu_z)  # the decoder at the posterior mean
        std_x = torch.exp(0.5 * logvar_x)
        rows += [to_unit(mu_x, signed), to_unit(std_x),  # predictive mean and standard deviation
                 to_unit(mu_x + std_x * randn_like(mu_x), signed)]  # a draw from p(x | z)
    return rows


@torch.no_grad()
def decoded_shape(model, config, z):
    # What the decoder says about the digit's shape, for a code z (B, K): the BAE's image, the
    # DAE's mask, the VAE's predictive standard deviation (its mean is about 0 on varianceMNIST).
    if config["model"] == "bae":  # on varianceMNIST (the control) its output is signed, like its input
        return to_unit(model.decoder(z), signed=config["dataset"] == "variance")
    if config["model"] == "dae":
        return to_unit(torch.sigmoid(model.decoder(z)))
    return to_unit(torch.exp(0.5 * model.decode(z)[1]))


@torch.no_grad()
def interpolation_rows(model, config, s, x, randn_like, steps=10):
    """One row per pair of digits (0, 1), (2, 3), ... of s, x (10, 1, 28, 28): the first digit, the
    decoded codes (1 - t) z_a + t z_b for `steps` values of t from 0 to 1, the second digit."""
    if config["model"] == "dae":  # its decoder learned from the codes of corrupted inputs
        x = x + config["noise_std"] * randn_like(x)
    z = model.encode(x)  # (10, K); the VAE's posterior means
    t = torch.linspace(0, 1, steps, device=z.device)[:, None]  # (steps, 1)
    rows = []
    for a in range(0, 10, 2):
        line = (1 - t) * z[a] + t * z[a + 1]  # (steps, K)
        rows.append(torch.cat([to_unit(s[a:a + 1]), decoded_shape(model, config, line), to_unit(s[a + 1:a + 2])]))
    return rows


@torch.no_grad()
def traversal_rows(model, config, x, steps=9):
    """VAE: one row per code dimension d, the predictive std of z = mu + c e_d, c from -3 to +3."""
    mu = model.encode(x[:1])  # (1, K), the posterior mean of one digit
    c = torch.linspace(-3, 3, steps, device=mu.device)
    rows = []
    for d in range(mu.shape[1]):
        z = mu.repeat(steps, 1)  # (steps, K)
        z[:, d] += c
        rows.append(decoded_shape(model, config, z))
    return rows


@torch.no_grad()
def sample_rows(model, config, device, gen, randn_like, n=50):
    # z ~ p(z) = N(0, I), then a row of predictive stds followed by a row of draws x ~ p(x | z)
    z = torch.randn(n, config["n_components"], generator=gen).to(device)
    mu_x, logvar_x = model.decode(z)
    std_x = torch.exp(0.5 * logvar_x)
    draw = mu_x + std_x * randn_like(mu_x)
    rows = []
    for i in range(0, n, 10):
        rows += [to_unit(std_x[i:i + 10]), to_unit(draw[i:i + 10], signed=True)]
    return rows


# -------------------------------------------------------------------------------------------------
# Evaluating a checkpoint of train.py: everything above, in order.


IS_IMAGES, IS_SAMPLES = 500, 100  # the VAE's -log p(x): test images and samples of z per image


def evaluate_checkpoint(path, data_dir, device="cpu", is_images=IS_IMAGES, is_samples=IS_SAMPLES):
    """Everything listed in the module docstring, written beside `path`; returns the metrics."""
    import ae  # only the command needs the model and data code of this project
    import data

    device = torch.device(device)
    model, config, history = load_model(path, ae.MODELS)
    model.to(device).eval()
    out, dataset = os.path.dirname(os.path.abspath(path)), config["dataset"]
    train_images, train_labels = data.load_mnist(data_dir, train=True)
    test_images, test_labels = data.load_mnist(data_dir, train=False)
    n = config.get("train_size", 60000)  # the probe is fitted on the images the model trained on
    train_images, train_labels = train_images[:n], train_labels[:n]
    gen = torch.Generator().manual_seed(SEEDS["model"])

    def randn_like(t):
        return torch.randn(t.shape, generator=gen).to(t.device)

    def codes_and_labels(encoder):  # the arguments of probe_accuracy, for one model's codes
        return (codes_of(encoder, train_images, dataset, device, SEEDS["train"]), train_labels,
                codes_of(encoder, test_images, dataset, device, SEEDS["test"]), test_labels)

    # 1. The codes of every image, and the linear probe on them. The DAE's are read from a copy
    # with BatchNorm statistics of clean images (adapt_batchnorm); the model's own are kept too.
    metrics, encoder = {}, model
    if config["model"] == "dae":
        metrics["probe_test_accuracy_unadapted"] = probe_accuracy(*codes_and_labels(model))
        encoder = encoder_for_codes(model, train_images, dataset, device)
    codes_train, _, codes_test, _ = codes_and_labels(encoder)
    predict = fit_probe(codes_train, train_labels)
    metrics["probe_train_accuracy"] = accuracy(predict, codes_train, train_labels)
    metrics["probe_test_accuracy"] = accuracy(predict, codes_test, test_labels)

    # 2. The same probe on the inputs and on the untrained encoder.
    untrained = untrained_model(ae.MODELS[config["model"]], config).to(device).eval()
    if config["model"] != "bae":  # a conv encoder: BatchNorm statistics from the data, no training
        untrained = encoder_for_codes(untrained, train_images, dataset, device)
    metrics["baselines"] = {
        **cached_input_baselines(data_dir, train_images, train_labels, test_images, test_labels, dataset,
                                 config["n_components"]),
        "untrained": probe_accuracy(*codes_and_labels(untrained))}

    # 3. The PCA of the test codes to 2-D, saved as points and as a picture.
    mean, comps = pca(codes_test, min(2, codes_test.shape[1]))
    pca_test = ((codes_test.double() - mean) @ comps.T).numpy()  # (N, K) -> (N, 2)
    pca_test = np.pad(pca_test, ((0, 0), (0, 2 - pca_test.shape[1])))  # K = 1: the second axis is 0
    arrays = {"codes_train": codes_train.numpy(), "codes_test": codes_test.numpy(),
              "labels_train": train_labels.numpy(), "labels_test": test_labels.numpy(), "pca_test": pca_test}
    for name, array in arrays.items():
        atomic_write(os.path.join(out, name + ".npy"), lambda f: np.save(f, array))
    scatter = torch.from_numpy(scatter_image(pca_test, test_labels.numpy())).permute(2, 0, 1) / 255.0  # (3, H, W)
    save_picture(os.path.join(out, "pca_test"), scatter, grey=False)

    # 4. Quality on the whole test set, beside a baseline or the optimum.
    if config["model"] == "bae":
        metrics.update(bae_quality(model, config, train_images, test_images, device))
    elif config["model"] == "dae":
        metrics.update(dae_quality(model, config, test_images, device, randn_like))
    else:
        metrics.update(vae_quality(model, config, test_images, device, randn_like, is_images, is_samples, ae))

    # 5. Pictures of the first test image of each digit 0-9, one per column.
    show = torch.stack([torch.nonzero(test_labels == d)[0, 0] for d in range(10)])
    s, x = next(fixed_inputs(test_images[show], dataset, device, SEEDS["test"]))  # (10, 1, 28, 28)
    save_picture(os.path.join(out, "recon"), grid(recon_rows(model, config, s, x, randn_like)))
    save_picture(os.path.join(out, "interpolation"), grid(interpolation_rows(model, config, s, x, randn_like)))
    if config["model"] == "vae":
        save_picture(os.path.join(out, "samples"), grid(sample_rows(model, config, device, gen, randn_like)))
        save_picture(os.path.join(out, "traversal"), grid(traversal_rows(model, config, x)))

    metrics.update({
        "loss_history": history.get("loss_history"), "test_loss_history": history.get("test_loss_history"),
        "train_seconds": history.get("train_seconds"), "samples_per_second": history.get("samples_per_second"),
        "config": config, "device": str(device), "torch_version": torch.__version__,
    })
    atomic_write(os.path.join(out, "metrics.json"), lambda f: f.write(json.dumps(metrics, indent=2).encode()))
    print_summary(metrics)
    print(f"wrote metrics.json, codes, PCA and pictures to {out}")
    return metrics


def print_summary(metrics):
    b = metrics["baselines"]
    print(f"probe_test_accuracy {metrics['probe_test_accuracy']:.4f}; the same probe on the pixels "
          f"{b['pixels']:.4f}" + (f", their squares {b['pixels_squared']:.4f}" if "pixels_squared" in b else "")
          + f", their PCA {b['pca']:.4f}, the untrained encoder {b['untrained']:.4f}")
    skip = ("probe_test_accuracy", "train_seconds", "samples_per_second")
    print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float) and k not in skip))


# =================================================================================================
# The machinery. A first reading may stop here: what follows saves files without ever leaving half
# of one, loads checkpoints with one-line errors, caches the input baselines, draws the scatter plot,
# writes the picture formats, and gives this file its command.
# =================================================================================================

# What evaluate_checkpoint writes beside model.pt (train.py removes them when it replaces model.pt).
OUTPUTS = ["metrics.json", "codes_train.npy", "codes_test.npy", "labels_train.npy", "labels_test.npy",
           "pca_test.npy", "pca_test.ppm", "pca_test.png", "recon.pgm", "recon.png", "interpolation.pgm",
           "interpolation.png", "samples.pgm", "samples.png", "traversal.pgm", "traversal.png"]


def atomic_write(path, write):
    # Write to a temporary file in the same folder, flush it to disk, then rename it over `path`.
    # A rename within one file system is atomic, so a crash or a full disk leaves either the old
    # file or the new one, never a mix; the temporary file is removed if anything fails.
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says why, in one line."""


def load_checkpoint(path, map_location="cpu"):
    if not os.path.exists(path):
        raise CheckpointError(f"{path} does not exist; pass the model.pt that train.py wrote")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a folder; pass the model.pt inside it")
    try:
        # weights_only=True, said explicitly: a checkpoint is tensors, numbers and strings, and
        # loading one must never run pickled code (torch before 2.6 does unless told not to).
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or another kind of "
                              f"file?): {reason}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path} is a torch file but not a checkpoint of train.py "
                              f"(it needs 'model' and 'config' entries)")
    return ckpt


def load_model(path, models):
    """(model, config, history) from a model.pt of train.py; `models` maps names to classes."""
    ckpt = load_checkpoint(path, map_location="cpu")
    config = ckpt["config"]
    needed = ["model", "dataset", "n_components", "noise_std", "seed"]
    if not isinstance(config, dict) or any(k not in config for k in needed) or config["model"] not in models:
        raise CheckpointError(f"{path} has no usable config (it needs {', '.join(needed)}, and a model "
                              f"among {', '.join(models)}); was it written by train.py?")
    model = models[config["model"]](config["n_components"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        detail = str(e).splitlines()[-1].strip()  # e.g. "size mismatch for encoder.7.weight: ..."
        raise CheckpointError(f"{path} does not match a {config['model']} with K={config['n_components']}: "
                              f"{detail[:200]}") from None
    return model, config, ckpt.get("history", {})


BASELINES_VERSION = 1


def cached_input_baselines(data_dir, train_images, train_labels, test_images, test_labels, dataset, k):
    # The input baselines depend only on the data, the evaluation's fixed noise and K, not on the
    # model, and the two 784-pixel probes take minutes on a small CPU: so they are computed once per
    # setting and kept in <data_dir>/MNIST/probe-baselines.json (delete it to recompute).
    path = os.path.join(data_dir, "MNIST", "probe-baselines.json")
    # Everything the numbers depend on is in the key; change BASELINES_VERSION with the code above.
    key = (f"v{BASELINES_VERSION} {dataset} train={train_images.shape[0]} test={test_images.shape[0]} K={k} "
           f"seeds={SEEDS['train']},{SEEDS['test']} probe={fit_probe.__defaults__} torch={torch.__version__}")
    try:
        with open(path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    if key not in cache:
        cache[key] = input_baselines(flat_inputs(train_images, dataset, SEEDS["train"]), train_labels,
                                     flat_inputs(test_images, dataset, SEEDS["test"]), test_labels, dataset, k)
        try:
            atomic_write(path, lambda f: f.write(json.dumps(cache, indent=1).encode()))
        except OSError:
            pass  # a read-only data folder: recompute next time
    return cache[key]


# Ten colours that stay apart (matplotlib's "tab10"), one per digit.
PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], np.uint8)


def scatter_image(points, labels, size=480, key_width=60):
    """A colour scatter plot (H, W, 3) uint8 of 2-D points (N, 2), a 3x3 dot in PALETTE[label] each.

    Each axis is scaled to its range: the dot of (px, py) has its top-left pixel at column
    8 + (px - min) / (max - min) * (size - 18) and row size - 10 - (py - min) / (max - min) * (size - 18),
    both truncated. A key on the right shows each digit beside its colour.
    """
    points, labels = np.asarray(points, np.float64), np.asarray(labels)
    img = np.full((size, size + key_width, 3), 255, np.uint8)
    lo, hi = points.min(0), points.max(0)
    xy = (points - lo) / np.where(hi > lo, hi - lo, 1)  # each axis to [0, 1]
    col = (8 + xy[:, 0] * (size - 18)).astype(int)
    row = (size - 10 - xy[:, 1] * (size - 18)).astype(int)  # y grows upwards, rows downwards
    order = np.random.default_rng(0).permutation(len(points))  # no class always drawn on top
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            img[row[order] + dy, col[order] + dx] = PALETTE[labels[order]]
    picture = Image.fromarray(img)
    draw = ImageDraw.Draw(picture)
    for digit in range(10):  # the key: a colour swatch and the digit
        top, left = 20 + digit * 40, size + 8
        draw.rectangle([left, top, left + 14, top + 14], fill=tuple(int(c) for c in PALETTE[digit]))
        draw.text((left + 22, top), str(digit), fill=(0, 0, 0))
    return np.array(picture)  # a writable copy


def encode_pnm(image):
    # Binary PGM (P5, grey) or PPM (P6, colour): a text header "P5 width height 255", then the raw
    # bytes, row by row. The simplest image format there is; most viewers open it.
    image = np.ascontiguousarray(image, dtype=np.uint8)
    magic = {2: b"P5", 3: b"P6"}[image.ndim]
    return b"%s\n%d %d\n255\n" % (magic, image.shape[1], image.shape[0]) + image.tobytes()


def save_picture(path_stem, picture, grey=True):
    """Writes <stem>.pgm (grey) or <stem>.ppm, and <stem>.png, from a (3, H, W) float tensor in [0, 1]
    such as make_grid returns; both hold the same bytes (save_image's rounding: floor(255 v + 0.5))."""
    pixels = picture.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
    if grey:
        pixels = pixels[:, :, 0]
    atomic_write(path_stem + (".pgm" if grey else ".ppm"), lambda f: f.write(encode_pnm(pixels)))
    atomic_write(path_stem + ".png", lambda f: save_image(picture, f, format="png"))


class OneLineParser(argparse.ArgumentParser):
    # argparse prints its whole usage on an error; a person needs just the line that says what
    # was wrong, and where to look.
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    p = OneLineParser(description="Evaluate a model.pt written by train.py; outputs go beside it.")
    p.add_argument("checkpoint", help="path to a model.pt written by train.py")
    p.add_argument("--data-dir", default=os.path.join(here, "data"),
                   help="folder holding MNIST/raw (default: data/ beside this file)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where to compute; auto picks cuda, then mps, then cpu (default: auto)")
    p.add_argument("--is-images", type=int, default=IS_IMAGES,
                   help="VAE: how many test images (the first ones) the importance-sampled -log p(x) "
                        f"is estimated on (default: {IS_IMAGES})")
    p.add_argument("--is-samples", type=int, default=IS_SAMPLES,
                   help=f"VAE: samples of z per image for that estimate; more is tighter and slower "
                        f"(default: {IS_SAMPLES})")
    args = p.parse_args(argv)
    if args.is_images < 1 or args.is_samples < 1:
        p.error("--is-images and --is-samples must be positive")
    import data

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA GPU is available to this torch; use --device cpu", file=sys.stderr)
        return 2
    elif device == "mps" and not torch.backends.mps.is_available():
        print("error: --device mps: no Apple MPS device is available to this torch; use --device cpu", file=sys.stderr)
        return 2
    try:
        evaluate_checkpoint(args.checkpoint, args.data_dir, device, args.is_images, args.is_samples)
    except KeyboardInterrupt:
        print("interrupted: the files written so far are whole; run it again to redo them all", file=sys.stderr)
        return 130
    except (CheckpointError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: could not read or write a file{where}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
