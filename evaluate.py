"""Evaluate a trained autoencoder: what its codes know, how good its outputs are, and pictures.

    python evaluate.py runs/vae-variance/model.pt      # train.py runs this after training

Every number comes beside what gives it meaning:
- the linear probe's test accuracy on the K-number codes, beside the same probe on the input pixels,
  on their squares (varianceMNIST), on a K-dimensional PCA of the pixels, and on the codes of the
  same encoder before training; and beside a non-linear readout, the 10 nearest training codes;
- the BAE's reconstruction error beside PCA's with the same K; the DAE's denoising error beside the
  Bayes-optimal denoiser's, its excess split between the digit's strokes and the background; the
  VAE's -ELBO beside its own -log p(x) (importance sampled) and the true generative model's negative
  log-likelihood, the distance split into the KL, the strokes and the background, and the KL of
  each code dimension (which ones are in use).

Writes beside the checkpoint, so evaluating a saved model again reproduces its folder:
    report.md                           the run on one page: its command, the numbers, every picture captioned
    metrics.json                        all the numbers, the loss history, timings, config, versions
    loss.ppm/.png                       the training loss of every step and the test loss of every epoch
    codes_{train,test}.npy, labels_{train,test}.npy     the K-dim codes, to check the probe yourself
    pca_test.npy, pca_test.ppm/.png     the test codes projected to 2-D by PCA, one colour per digit
    recon.pgm/.png                      test digits and what the model makes of them, row by row
    interpolation.pgm/.png              decoded straight lines between the codes of two digits
    neighbours.pgm/.png                 test digits, each beside the 8 training images nearest by code
    samples.pgm/.png, traversal.pgm/.png (VAE)   samples of the prior; each code dimension swept

Read it in this order: the probe and the nearest-neighbour readout, PCA, the codes (and
adapt_batchnorm, for the DAE's encoder and the untrained ones), the baselines, the quality numbers, the pictures, and
evaluate_checkpoint, which runs them all. Below the marked line: files (atomic writes, checkpoints,
the cached baselines, the scatter plot, the training curve, image formats, report.md) and the
command line. The formulas it measures with (the corruption, the optimal mask, the -ELBO) are
ae.py's and the varianceMNIST draw is data.py's, so this file needs those two beside it, plus
torch, torchvision, numpy and Pillow (which torchvision installs); the probe, the nearest codes
and the PCA need only torch and can be copied out alone.
"""

import argparse
import copy
import json
import os
import sys
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.utils import make_grid, save_image

import ae  # the models, and the formulas evaluation measures them by (corruption, optimal mask, -ELBO)
import data  # MNIST and the varianceMNIST draw

# Evaluation noise comes from CPU generators with these seeds, one per use, so every device sees
# the same numbers, the training and test images never share a noise field, and no use draws from
# another's stream: the order in which evaluate_checkpoint runs its steps changes no number.
# "train", "test": the varianceMNIST draws of the inputs; "quality": the DAE's corruption and the
# VAE's samples of the quality numbers; "likelihood": the samples of z of the importance-sampled
# -log p(x); "recon", "interpolation", "samples": the noise of each picture.
SEEDS = {"train": 2024, "test": 2025, "quality": 2026, "likelihood": 2027, "recon": 2028, "interpolation": 2029,
         "samples": 2030}


# -------------------------------------------------------------------------------------------------
# The linear probe: multinomial logistic regression, fitted by L-BFGS on the training codes.
#
# The usual test of a representation: freeze the encoder, fit a linear classifier on the codes of
# the training images, report its accuracy on the test images. If a linear map of K numbers
# recovers the digit, the code holds the digit's shape.


def standardiser(train_codes):
    """A function codes -> (codes - mean) / std, float64 on the CPU, with the statistics of the
    training codes (N, K)."""
    X = train_codes.detach().double().cpu()
    mean, std = X.mean(0), X.std(0).clamp_min(1e-12)
    return lambda codes: (codes.detach().double().cpu() - mean) / std


def fit_probe(codes, labels, n_classes=10, l2=1e-4, max_iter=200, dtype=torch.float64):
    """Returns a function codes -> predicted labels. Codes (N, K) float, labels (N,) int64."""
    # Standardise each code dimension with the training statistics, so that L-BFGS meets a
    # well-conditioned problem and the small L2 penalty weighs every dimension alike, whatever
    # scale the encoder gave it. On the CPU the fit is deterministic, whatever device trained the
    # model; float64 for the codes, float32 for the 784 pixels (pixel_baselines), where it reaches
    # the same accuracy and, with the layout below, a cold cache's fits take a third of the time
    # they took in float64 (docs/robustness.md).
    standardise = standardiser(codes)
    X, y = standardise(codes).to(dtype), labels.cpu()
    # W is (classes, K), F.linear's layout: the gradient X^T G is then computed as (G^T X)^T, the
    # product a CPU does fastest for a tall X (N, K) and few classes
    W = torch.zeros(n_classes, X.shape[1], dtype=dtype, requires_grad=True)
    b = torch.zeros(n_classes, dtype=dtype, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=100,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        # cross-entropy of softmax(X W^T + b), plus a small L2 penalty so that the optimum is finite
        # even when the classes are separable
        loss = F.cross_entropy(F.linear(X, W, b), y) + l2 * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    W, b = W.detach(), b.detach()
    return lambda c: F.linear(standardise(c).to(dtype), W, b).argmax(1)


def accuracy(predict, codes, labels):
    return (predict(codes) == labels.cpu()).double().mean().item()


def probe_accuracy(train_codes, train_labels, test_codes, test_labels, dtype=torch.float64):
    return accuracy(fit_probe(train_codes, train_labels, dtype=dtype), test_codes, test_labels)


def probe_validation_accuracy(train_codes, train_labels):
    # The number to choose settings by, so that the test set is read once per decision: the probe
    # fitted on the first 5/6 of the training codes (50000 of 60000) and read on the last 1/6.
    # The encoder trained on all of them, but without labels; the probe never saw the last 1/6.
    n_fit = train_codes.shape[0] - train_codes.shape[0] // 6
    return probe_accuracy(train_codes[:n_fit], train_labels[:n_fit], train_codes[n_fit:], train_labels[n_fit:])


# -------------------------------------------------------------------------------------------------
# A non-linear readout beside the linear probe: the majority digit of the nearest training codes.
#
# The probe asks whether flat boundaries in code space separate the digits; the k-nearest-neighbour
# readout only whether codes of the same digit lie near each other. Where it reads much more than
# the probe, the code holds the digit in a form a line cannot read. The distances are taken after
# the probe's standardisation, so that every code dimension counts alike; a VAE dimension that is
# nearly unused (its posterior almost the prior for every image: "collapsed", see active_units and
# docs/sweeps.md) is then scaled up like the others, and adds mostly noise.


def nearest_training_codes(train_codes, query_codes, k, chunk=1000):
    """Indices (M, k) of the k training codes (N, K) nearest to each query code (M, K), nearest first
    (all N of them, if N < k: a quick run with --train-size under k)."""
    k, standardise = min(k, train_codes.shape[0]), standardiser(train_codes)  # the probe's standardisation
    X = standardise(train_codes).float()  # float32: the (chunk, N) distances below take most of the time
    x_sq = X.pow(2).sum(1)  # (N,)
    nearest = []
    for q in query_codes.split(chunk):
        q = standardise(q).float()
        # ||q - x||^2 = ||q||^2 - 2 q.x + ||x||^2; ||q||^2 is the same for a whole row, so it is left out
        dist = torch.addmm(x_sq, q, X.T, alpha=-2)  # (chunk, N)
        nearest.append(dist.topk(k, dim=1, largest=False).indices)
    return torch.cat(nearest)


def knn_accuracy(train_codes, train_labels, test_codes, test_labels, k=10, n_classes=10):
    # each test code gets the digit most of its k nearest training codes have (a tie: the smaller digit)
    nearest = nearest_training_codes(train_codes, test_codes, k)  # (M, k)
    votes = F.one_hot(train_labels.cpu()[nearest], n_classes).sum(1)  # (M, k) -> (M, k, 10) -> (M, 10)
    return (votes.argmax(1) == test_labels.cpu()).double().mean().item()


# -------------------------------------------------------------------------------------------------
# PCA: the eigenvectors of the covariance matrix of the centred data.


def pca(X, k):
    """Returns (mean (D,), components (k, D)) of the rows of X (N, D), in float64; project with
    `project`."""
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


def project(X, mean, components):
    # the coordinates of the rows of X (N, D) along the k principal directions: (N, D) -> (N, k)
    return (X.double() - mean) @ components.T


# -------------------------------------------------------------------------------------------------
# The codes: of the data itself (MNIST, or clean varianceMNIST), one fixed draw per image.


def fixed_inputs(images_uint8, dataset, device, seed, chunk=1000):
    """Yields (s, x) chunks: intensities s in [0, 1] and the model input x, on `device`.

    The varianceMNIST draw is data.make_batch's, with a CPU generator seeded with `seed`, so every
    device evaluates on exactly the same numbers.
    """
    gen = torch.Generator().manual_seed(seed)
    for part in images_uint8.split(chunk):
        yield data.to_float(part).to(device), data.make_batch(part, dataset, generator=gen).to(device)


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


def adapted_copy(model, train_images, dataset, device):
    """A copy of the whole `model`, its encoder's BatchNorm statistics estimated on 10000 clean
    training inputs: for an encoder that was not trained on them (the DAE's, an untrained one)."""
    copied = copy.deepcopy(model)
    # chunks of 1000; a last chunk of one image (--train-size 1001, say) is left out, since the
    # VAE's BatchNorm1d has no variance to measure in it
    batches = (x for _, x in fixed_inputs(train_images[:10000], dataset, device, SEEDS["train"]) if x.shape[0] > 1)
    return adapt_batchnorm(copied, batches)


class Splits(NamedTuple):
    # MNIST as evaluation reads it: uint8 images (N, 1, 28, 28) and int64 labels (N,), on the CPU.
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def codes_and_labels(encoder, splits, dataset, device):
    """The arguments of probe_accuracy for one encoder: its train codes, labels, test codes, labels."""
    return (codes_of(encoder, splits.train_images, dataset, device, SEEDS["train"]), splits.train_labels,
            codes_of(encoder, splits.test_images, dataset, device, SEEDS["test"]), splits.test_labels)


def codes_and_readouts(model, config, splits, device):
    """The codes, (train (N, K), test (10000, K)), and what is read from them: the linear probe's
    train and test accuracies, the k-NN readout's, and the VAE's active units. The DAE's codes are
    read from a copy with BatchNorm statistics of clean images (adapted_copy); the probe on the
    model's own statistics is reported too."""
    metrics, encoder = {}, model
    if config["model"] == "dae":
        own_statistics = codes_and_labels(model, splits, config["dataset"], device)
        metrics["probe_test_accuracy_unadapted"] = probe_accuracy(*own_statistics)
        encoder = adapted_copy(model, splits.train_images, config["dataset"], device)
    codes_train, _, codes_test, _ = codes_and_labels(encoder, splits, config["dataset"], device)
    predict = fit_probe(codes_train, splits.train_labels)
    metrics["probe_train_accuracy"] = accuracy(predict, codes_train, splits.train_labels)
    metrics["probe_test_accuracy"] = accuracy(predict, codes_test, splits.test_labels)
    if codes_train.shape[0] >= 12:  # at least 2 held-out codes
        metrics["probe_validation_accuracy"] = probe_validation_accuracy(codes_train, splits.train_labels)
    metrics["knn_test_accuracy"] = knn_accuracy(codes_train, splits.train_labels, codes_test, splits.test_labels)
    if config["model"] == "vae":
        metrics["active_units"] = active_units(codes_test)
    return (codes_train, codes_test), metrics


def active_units(posterior_means, threshold=0.01):
    # A code dimension is in use when its posterior mean moves with the image: its variance over
    # the test images above 0.01 (Burda et al., 2015). A collapsed dimension has q(z_j | x) = p(z_j)
    # for every x, so its mean sits at 0 and it carries nothing (its KL is 0 too).
    return int((posterior_means.double().var(0) > threshold).sum())


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
    return {**pixel_baselines(train_x, train_labels, test_x, test_labels, dataset),
            "pca": pca_baseline(train_x, train_labels, test_x, test_labels, k)}


def pixel_baselines(train_x, train_labels, test_x, test_labels, dataset):
    # float32: the two fits on 784 pixels are most of a first run's evaluation (fit_probe)
    result = {"pixels": probe_accuracy(train_x, train_labels, test_x, test_labels, torch.float32)}
    if dataset == "variance":
        result["pixels_squared"] = probe_accuracy(train_x ** 2, train_labels, test_x ** 2, test_labels, torch.float32)
    return result


def pca_baseline(train_x, train_labels, test_x, test_labels, k):
    mean, comps = pca(train_x, k)  # fitted on the training inputs
    return probe_accuracy(project(train_x, mean, comps), train_labels, project(test_x, mean, comps), test_labels)


def untrained_model(model_class, config):
    # The model exactly as train.py initialised it: the same seed, then the same constructor, on
    # the CPU. fork_rng leaves the caller's random generators as they were.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        return model_class(config["n_components"])


def baselines(config, splits, device, data_dir):
    """The probe on the inputs (cached beside MNIST, below the line) and on the untrained encoder."""
    untrained = untrained_model(ae.MODELS[config["model"]], config).to(device).eval()
    if config["model"] != "bae":  # a conv encoder: BatchNorm statistics from the data, no training
        untrained = adapted_copy(untrained, splits.train_images, config["dataset"], device)
    return {**cached_input_baselines(data_dir, splits, config["dataset"], config["n_components"]),
            "untrained": probe_accuracy(*codes_and_labels(untrained, splits, config["dataset"], device))}


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
        recon = project(xf, mean, comps) @ comps + mean  # onto the K directions and back
        pca_sq += (recon - xf).pow(2).sum().item()
    return {"test_mse": sq / n, "pca_test_mse": pca_sq / n}


def split_by_stroke(excess, s):
    # The sums of `excess` (B, 1, 28, 28) over the digit's stroke pixels (s > 0) and over the
    # background (s = 0), in float64 on the CPU (MPS has none).
    excess, s = excess.cpu().double(), s.cpu()
    return excess[s > 0].sum().item(), excess[s == 0].sum().item()


@torch.no_grad()
def dae_quality(model, config, test_images, device):
    # Denoising MSE beside the Bayes-optimal denoiser that knows each pixel's true variance s^2:
    #     g*(x~) = x~ * s^2 / (s^2 + sigma_n^2)      (ae.optimal_mask, derived in ae.py)
    # The ratio is >= 1 up to sampling noise; 1 means the DAE denoises as well as possible. The
    # excess over the optimum is split by where the pixel is: on the digit's strokes (s > 0) or on
    # the background (s = 0, where the optimal mask is exactly 0).
    sigma_n, n = config["noise_std"], test_images.shape[0] * 784
    gen = torch.Generator().manual_seed(SEEDS["quality"])  # the corruption's fixed noise
    sq = oracle_sq = stroke = background = 0.0
    for s, x in fixed_inputs(test_images, config["dataset"], device, SEEDS["test"]):
        x_noisy = ae.corrupt(x, sigma_n, gen)
        err, oracle_err = (model(x_noisy) - x).pow(2), (x_noisy * ae.optimal_mask(s, sigma_n) - x).pow(2)
        sq, oracle_sq = sq + err.sum().item(), oracle_sq + oracle_err.sum().item()
        on_strokes, on_background = split_by_stroke(err - oracle_err, s)
        stroke, background = stroke + on_strokes, background + on_background
    metrics = {"test_mse": sq / n}
    if config["dataset"] == "variance" and sigma_n > 0:  # the oracle assumes varianceMNIST
        metrics.update(oracle_mse=oracle_sq / n, mse_over_oracle=sq / oracle_sq,
                       excess_mse={"stroke_pixels": stroke / n, "background_pixels": background / n})
    return metrics


def oracle_nll(s, min_logvar, per_pixel=False):
    # The expected negative log-likelihood of the true generative model of varianceMNIST with the
    # VAE's variance floor, pixel variance v = max(s^2, exp(min_logvar)), per image (B,):
    #     E_x[-log N(x | 0, v)] = 1/2 * sum_i (log v_i + s_i^2 / v_i)      (since E[x_i^2] = s_i^2)
    # No model with this floor can beat it on average, so the gap is what the VAE still misses.
    v = s.pow(2).clamp_min(np.exp(min_logvar))
    nll = 0.5 * (v.log() + s.pow(2) / v)  # s's shape: one term per pixel
    return nll if per_pixel else nll.flatten(1).sum(1)


@torch.no_grad()
def vae_quality(model, config, test_images, device):
    # Negative ELBO per test image (nats, without the 784/2 log 2pi constant), one fixed sample of
    # z per image (from a CPU generator of its own), beside the true model's expected negative
    # log-likelihood (oracle_nll). The distance between them is split three ways: the KL term (what
    # the code costs), and the reconstruction term's excess over the true model on the digit's
    # stroke pixels (s > 0) and on the background (s = 0, where the true variance is the floor).
    # The KL is also kept per code dimension: a dimension with KL ~0 is unused ("collapsed").
    kl, nll, oracle, stroke, background, kl_per_dimension = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    gen = torch.Generator().manual_seed(SEEDS["quality"])
    for s, x in fixed_inputs(test_images, config["dataset"], device, SEEDS["test"]):
        kl_terms, nll_terms = ae.neg_elbo_terms(model, x, gen)  # (B, K), (B, 1, 28, 28)
        kl += kl_terms.sum(dim=1).sum().item()
        nll += nll_terms.flatten(1).sum(dim=1).sum().item()
        kl_per_dimension = kl_per_dimension + kl_terms.cpu().double().sum(0)  # (K,)
        oracle_terms = oracle_nll(s, model.min_logvar.item(), per_pixel=True)  # (B, 1, 28, 28)
        oracle += oracle_terms.flatten(1).sum(1).sum().item()
        on_strokes, on_background = split_by_stroke(nll_terms - oracle_terms, s)
        stroke, background = stroke + on_strokes, background + on_background
    n = test_images.shape[0]
    metrics = {"test_neg_elbo": (kl + nll) / n, "test_kl": kl / n, "test_nll": nll / n,
               "kl_per_dimension": (kl_per_dimension / n).tolist()}
    if config["dataset"] == "variance":
        metrics["oracle_nll"] = oracle / n
        metrics["gap_to_true_model"] = {"kl": kl / n, "stroke_pixels": stroke / n, "background_pixels": background / n}
    return metrics


def bound_gaps(model, config, images, device, is_samples):
    # The VAE's two gaps, on `images` (the first test images): -ELBO >= -log p(x) (the bound's slack,
    # from q(z | x) not being the true posterior) >= the true model's NLL (what the model misses).
    neg_log_p, neg_elbo, subset_oracle = likelihood_estimate(model, images, config["dataset"], device, is_samples)
    metrics = dict(subset_size=images.shape[0], is_samples=is_samples, subset_neg_elbo=neg_elbo, test_nll_is=neg_log_p)
    if config["dataset"] == "variance":
        metrics["subset_oracle_nll"] = subset_oracle
    return metrics


@torch.no_grad()
def likelihood_estimate(model, images, dataset, device, n_samples):
    """(-log p(x), -ELBO, the true model's NLL), each averaged over `images` (uint8): -log p(x)
    importance sampled with n_samples draws of z per image (ae.importance_sampled_nll), the -ELBO
    from the same draws; the draws are the evaluation's fixed ones, whatever n_samples is."""
    gen = torch.Generator().manual_seed(SEEDS["likelihood"])
    neg_log_p = neg_elbo = oracle = 0.0
    for s, x in fixed_inputs(images, dataset, device, SEEDS["test"], chunk=100):
        nlp, nelbo = ae.importance_sampled_nll(model, x, n_samples, generator=gen)
        neg_log_p, neg_elbo = neg_log_p + nlp.sum().item(), neg_elbo + nelbo.sum().item()
        oracle += oracle_nll(s, model.min_logvar.item()).sum().item()
    m = images.shape[0]
    return neg_log_p / m, neg_elbo / m, oracle / m


def quality(model, config, splits, device):
    """Each model's quality numbers on the whole test set, beside a baseline or the optimum."""
    if config["model"] == "bae":
        return bae_quality(model, config, splits.train_images, splits.test_images, device)
    if config["model"] == "dae":
        return dae_quality(model, config, splits.test_images, device)
    return vae_quality(model, config, splits.test_images, device)


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
def recon_rows(model, config, s, x):
    """Rows for recon.pgm, top to bottom as listed in the comments; s, x: (10, 1, 28, 28)."""
    signed = config["dataset"] == "variance"
    gen = torch.Generator().manual_seed(SEEDS["recon"])  # the DAE's corruption, the VAE's draw
    rows = [to_unit(s)]  # the MNIST digits
    if signed:
        rows.append(to_unit(x, signed=True))  # the varianceMNIST input
    if config["model"] == "bae":
        rows.append(to_unit(model(x), signed))  # reconstruction
    elif config["model"] == "dae":
        x_noisy = ae.corrupt(x, config["noise_std"], gen)
        mask = model.mask(x_noisy)
        rows += [to_unit(x_noisy, signed), to_unit(x_noisy * mask, signed), to_unit(mask)]  # x~, x~ * m, m
        if signed and config["noise_std"] > 0:  # the optimal mask s^2 / (s^2 + sigma_n^2)
            rows.append(to_unit(ae.optimal_mask(s, config["noise_std"])))
    else:
        mu_z, logvar_z = model.encode_dist(x)
        mu_x, logvar_x = model.decode(mu_z)  # the decoder at the posterior mean
        std_x = torch.exp(0.5 * logvar_x)
        rows += [to_unit(mu_x, signed), to_unit(std_x),  # predictive mean and standard deviation
                 to_unit(ae.reparameterize(mu_x, logvar_x, gen), signed)]  # a draw x ~ N(mu_x, sigma_x^2)
    return rows


@torch.no_grad()
def decoded_outline(model, config, z):
    # The digit's outline as each decoder draws it, for codes z (B, K) -> (B, 1, 28, 28) in [0, 1]:
    # the BAE's image, the DAE's mask (its decode), the VAE's predictive standard deviation (its
    # decode gives a mean, about 0 on varianceMNIST, and a log-variance). Three decoders that say
    # three different things, so three branches: this is the one place that picks what each shows.
    if config["model"] == "bae":  # on varianceMNIST (the control) its output is signed, like its input
        return to_unit(model.decoder(z), signed=config["dataset"] == "variance")
    if config["model"] == "dae":
        return to_unit(model.decode(z))
    return to_unit(torch.exp(0.5 * model.decode(z)[1]))


@torch.no_grad()
def interpolation_rows(model, config, s, x, steps=10):
    """One row per pair of digits (0, 1), (2, 3), ... of s, x (10, 1, 28, 28): the first digit, the
    decoded codes (1 - t) z_a + t z_b for `steps` values of t from 0 to 1, the second digit."""
    if config["model"] == "dae":  # its decoder learned from the codes of corrupted inputs
        x = ae.corrupt(x, config["noise_std"], torch.Generator().manual_seed(SEEDS["interpolation"]))
    z = model.encode(x)  # (10, K); the VAE's posterior means
    t = torch.linspace(0, 1, steps, device=z.device)[:, None]  # (steps, 1)
    rows = []
    for a in range(0, 10, 2):
        line = (1 - t) * z[a] + t * z[a + 1]  # (steps, K)
        rows.append(torch.cat([to_unit(s[a:a + 1]), decoded_outline(model, config, line), to_unit(s[a + 1:a + 2])]))
    return rows


@torch.no_grad()
def traversal_rows(model, config, x, kl_per_dimension, steps=9):
    """VAE: one row per code dimension d, the predictive std of z = mu + c e_d, c from -3 to +3;
    the dimensions in order of their KL, most informative first, so collapsed ones come last."""
    mu = model.encode(x[:1])  # (1, K), the posterior mean of one digit
    c = torch.linspace(-3, 3, steps, device=mu.device)
    rows = []
    for d in torch.tensor(kl_per_dimension).argsort(descending=True, stable=True).tolist():
        z = mu.repeat(steps, 1)  # (steps, K)
        z[:, d] += c
        rows.append(decoded_outline(model, config, z))
    return rows


def neighbour_rows(splits, codes_train, codes_test, show, k=8):
    """One row per shown test digit: the digit, then the k training images whose codes are nearest
    to its code (nearest first), as MNIST intensities."""
    nearest = nearest_training_codes(codes_train, codes_test[show], k)  # (10, k)
    return [to_unit(data.to_float(torch.cat([splits.test_images[i:i + 1], splits.train_images[row]])))
            for i, row in zip(show.tolist(), nearest)]


@torch.no_grad()
def sample_rows(model, config, device, n=50):
    # z ~ p(z) = N(0, I), then a row of predictive stds followed by a row of draws x ~ p(x | z)
    gen = torch.Generator().manual_seed(SEEDS["samples"])
    z = torch.randn(n, config["n_components"], generator=gen).to(device)
    mu_x, logvar_x = model.decode(z)
    std_x, draw = torch.exp(0.5 * logvar_x), ae.reparameterize(mu_x, logvar_x, gen)  # x ~ N(mu_x, sigma_x^2)
    rows = []
    for i in range(0, n, 10):
        rows += [to_unit(std_x[i:i + 10]), to_unit(draw[i:i + 10], signed=True)]
    return rows


def save_pictures(out, model, config, splits, codes, metrics, device):
    """recon, interpolation, neighbours (and the VAE's samples, traversal) of the first test image of
    each digit; codes: (train, test) codes, for the neighbours; metrics: the VAE's KL per dimension."""
    show = torch.stack([torch.nonzero(splits.test_labels == d)[0, 0] for d in range(10)])
    s, x = next(fixed_inputs(splits.test_images[show], config["dataset"], device, SEEDS["test"]))  # (10, 1, 28, 28)
    save_picture(os.path.join(out, "recon"), grid(recon_rows(model, config, s, x)))
    save_picture(os.path.join(out, "interpolation"), grid(interpolation_rows(model, config, s, x)))
    save_picture(os.path.join(out, "neighbours"), grid(neighbour_rows(splits, *codes, show)))
    if config["model"] == "vae":
        save_picture(os.path.join(out, "samples"), grid(sample_rows(model, config, device)))
        traversal = traversal_rows(model, config, x, metrics["kl_per_dimension"])
        save_picture(os.path.join(out, "traversal"), grid(traversal))


def save_loss_curve(out, history, config):
    """loss.ppm/.png: the training loss of every step and the test loss of every epoch (history from
    train.py); nothing for a model.pt from before the steps' losses were kept."""
    steps, epochs = history.get("step_losses", []), len(history.get("test_loss_history", []))
    n = config.get("train_size", 60000)
    if not steps or len(steps) != epochs * (n // min(config.get("batch_size", n), n)):
        return False
    picture = loss_curve_image(steps, history["test_loss_history"], len(steps) // epochs)
    save_picture(os.path.join(out, "loss"), torch.from_numpy(picture).permute(2, 0, 1) / 255.0, grey=False)
    return True


# -------------------------------------------------------------------------------------------------
# Evaluating a checkpoint of train.py: everything above, in order.


IS_IMAGES, IS_SAMPLES = 500, 100  # the VAE's -log p(x): test images and samples of z per image


def evaluate_checkpoint(path, data_dir, device="cpu", is_images=IS_IMAGES, is_samples=IS_SAMPLES):
    """Everything listed in the module docstring, written beside `path`; returns the metrics."""
    device = torch.device(device)
    model, config, history = load_model(path, ae.MODELS)
    model.to(device).eval()
    out = os.path.dirname(os.path.abspath(path))
    splits = load_splits(data_dir, config.get("train_size", 60000))  # the probe fits the images the model trained on

    say(f"evaluating: the codes of {splits.train_images.shape[0] + 10000} images and the linear probe")
    codes, metrics = codes_and_readouts(model, config, splits, device)  # codes: (train (N, K), test (10000, K))
    say("evaluating: the same probe on the untrained encoder and on the inputs")
    metrics["baselines"] = baselines(config, splits, device, data_dir)
    save_codes(out, *codes, splits)
    say("evaluating: quality beside " + {"bae": "PCA", "dae": "the optimal denoiser", "vae": "the true model (and "
                                         "-log p(x) by importance sampling)"}[config["model"]])
    metrics.update(quality(model, config, splits, device))
    if config["model"] == "vae":  # and how tight its bound is, on the first is_images test images
        metrics.update(bound_gaps(model, config, splits.test_images[:is_images], device, is_samples))
    save_pictures(out, model, config, splits, codes, metrics, device)
    save_loss_curve(out, history, config)
    metrics.update(run_record(history, config, device))
    atomic_write(os.path.join(out, "metrics.json"), lambda f: f.write(json.dumps(metrics, indent=2).encode()))
    write_report(out, config, history, metrics)
    print_summary(metrics)
    print(f"wrote metrics.json, codes, PCA, pictures and report.md to {out}")
    return metrics


def save_codes(out, codes_train, codes_test, splits):
    # The codes and labels as .npy, and the test codes projected to 2-D by their PCA, as points
    # and as a picture.
    mean, comps = pca(codes_test, min(2, codes_test.shape[1]))
    pca_test = project(codes_test, mean, comps).numpy()  # (N, K) -> (N, 2)
    pca_test = np.pad(pca_test, ((0, 0), (0, 2 - pca_test.shape[1])))  # K = 1: the second axis is 0
    arrays = {"codes_train": codes_train.numpy(), "codes_test": codes_test.numpy(),
              "labels_train": splits.train_labels.numpy(), "labels_test": splits.test_labels.numpy(),
              "pca_test": pca_test}
    for name, array in arrays.items():
        atomic_write(os.path.join(out, name + ".npy"), lambda f: np.save(f, array))
    scatter = scatter_image(pca_test, splits.test_labels.numpy())  # (H, W, 3) uint8
    scatter = torch.from_numpy(scatter).permute(2, 0, 1) / 255.0  # -> (3, H, W) in [0, 1]
    save_picture(os.path.join(out, "pca_test"), scatter, grey=False)


def print_summary(metrics):
    print("\n".join(summary_lines(metrics)))


def summary_lines(metrics):
    # A few labelled lines, each number beside what gives it meaning (printed, and in report.md).
    b, model = metrics["baselines"], metrics["config"]["model"]
    validation = metrics.get("probe_validation_accuracy")
    lines = [f"probe: test accuracy {metrics['probe_test_accuracy']:.2%} "
             f"(train {metrics['probe_train_accuracy']:.2%}"
             + (f", validation {validation:.2%}" if validation is not None else "") + "); "
             f"the 10 nearest training codes' majority {metrics['knn_test_accuracy']:.2%}",
             f"  the same probe on the pixels {b['pixels']:.2%}"
             + (f", their squares {b['pixels_squared']:.2%}" if "pixels_squared" in b else "")
             + f", their PCA {b['pca']:.2%}, the untrained encoder {b['untrained']:.2%}"]
    if model == "dae":
        lines.append(f"  with the BatchNorm statistics of corrupted inputs: "
                     f"{metrics['probe_test_accuracy_unadapted']:.2%}")
        lines.append(f"denoising: MSE {metrics['test_mse']:.5f}" + (
            f", {metrics['mse_over_oracle']:.3f} x the optimal denoiser's {metrics['oracle_mse']:.5f}; the excess "
            f"{metrics['excess_mse']['stroke_pixels']:.5f} on the strokes, "
            f"{metrics['excess_mse']['background_pixels']:.5f} "
            f"on the background" if "oracle_mse" in metrics else ""))
    if model == "bae":
        lines.append(f"reconstruction: MSE {metrics['test_mse']:.4f}, "
                     f"PCA with the same K {metrics['pca_test_mse']:.4f}")
    if model == "vae":
        true_model = "oracle_nll" in metrics  # varianceMNIST: the true model is known
        lines.append(f"-ELBO: {metrics['test_neg_elbo']:.1f} nats per image (KL {metrics['test_kl']:.1f} + "
                     f"reconstruction {metrics['test_nll']:.1f})"
                     + (f"; the true model's NLL {metrics['oracle_nll']:.1f}" if true_model else ""))
        if true_model:
            gap = metrics["gap_to_true_model"]
            lines.append(f"  the {metrics['test_neg_elbo'] - metrics['oracle_nll']:.1f} nats to the true model: KL "
                         f"{gap['kl']:.1f}, strokes {gap['stroke_pixels']:.1f}, "
                         f"background {gap['background_pixels']:.1f}")
        lines.append(f"  first {metrics['subset_size']} test images: -ELBO {metrics['subset_neg_elbo']:.1f} >= "
                     f"-log p(x) {metrics['test_nll_is']:.1f} ({metrics['is_samples']} samples of z)"
                     + (f" >= the true model's {metrics['subset_oracle_nll']:.1f}" if true_model else ""))
        lines.append(f"  code dimensions in use: {metrics['active_units']} of "
                     f"{len(metrics['kl_per_dimension'])}; KL of "
                     f"each: {' '.join(f'{v:.1f}' for v in sorted(metrics['kl_per_dimension'], reverse=True))}")
    return lines


# =================================================================================================
# The machinery. A first reading may stop here: what follows saves files without ever leaving half
# of one, loads checkpoints with one-line errors, caches the input baselines, draws the scatter plot,
# writes the picture formats, and gives this file its command.
# =================================================================================================

# What evaluate_checkpoint writes beside model.pt (train.py removes them when it replaces model.pt).
OUTPUTS = ["metrics.json", "codes_train.npy", "codes_test.npy", "labels_train.npy", "labels_test.npy",
           "pca_test.npy", "pca_test.ppm", "pca_test.png", "recon.pgm", "recon.png", "interpolation.pgm",
           "interpolation.png", "neighbours.pgm", "neighbours.png", "samples.pgm", "samples.png", "traversal.pgm",
           "traversal.png", "loss.ppm", "loss.png", "report.md"]


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


class UserError(Exception):
    """A mistake a person can fix; printed as one line, exit status 2. (train.py uses it too.)"""


class CheckpointError(UserError):
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


# The settings that decide what train.py computes, saved in every checkpoint (train.py's list is this
# one), and of them the ones evaluation rebuilds and measures the model with (train_size, where a
# checkpoint has it, chooses the probe's training images; older checkpoints lack it).
CONFIG_KEYS = ["model", "dataset", "epochs", "batch_size", "lr", "lr_schedule", "noise_start", "kl_warmup",
               "n_components", "noise_std", "seed", "train_size", "precision"]
EVALUATION_KEYS = [key for key in CONFIG_KEYS if key in ("model", "dataset", "n_components", "noise_std", "seed")]
# What a run saved before a flag existed trained with: the one schedule there was, float32, no KL
# warm-up, and the same corruption throughout (with_old_defaults). A resumed run continues so
# (train.settings), and report.md rebuilds it so.
BEFORE_THE_FLAG = {"lr_schedule": "warmup_cosine", "precision": "fp32", "kl_warmup": 0.0}


def with_old_defaults(config):
    # a saved config, with what its run trained with for each flag it predates
    old = {**BEFORE_THE_FLAG, "noise_start": config.get("noise_std") if config.get("model") == "dae" else None}
    return {**config, **{k: v for k, v in old.items() if k not in config}}


def load_model(path, models):
    """(model, config, history) from a model.pt of train.py; `models` maps names to classes."""
    ckpt = load_checkpoint(path, map_location="cpu")
    config = ckpt["config"]
    needed = EVALUATION_KEYS
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


def load_splits(data_dir, train_size=60000):
    """MNIST's two splits on the CPU, the training split cut to the first `train_size` images."""
    train_images, train_labels = data.load_mnist(data_dir, train=True)
    test_images, test_labels = data.load_mnist(data_dir, train=False)
    return Splits(train_images[:train_size], train_labels[:train_size], test_images, test_labels)


def run_record(history, config, device):
    # What the run was: its losses and timings from training, its config, where it ran, the versions.
    return {"loss_history": history.get("loss_history"), "test_loss_history": history.get("test_loss_history"),
            "train_seconds": history.get("train_seconds"), "samples_per_second": history.get("samples_per_second"),
            "config": config, "device": str(device), "torch_version": torch.__version__}


def say(message):
    # A line before each step that takes more than a few seconds, so that a long evaluation is
    # never silent; flushed, so that it shows at once even when the output is a pipe or a file.
    print(message, flush=True)


BASELINES_VERSION = 3  # 3: the pixels' probes in float32, L-BFGS remembering 100 steps


def cached_input_baselines(data_dir, splits, dataset, k):
    # The input baselines depend only on the data and the evaluation's fixed noise (and the PCA's on
    # K), not on the model, and the two 784-pixel probes take minutes on a small CPU: so they are
    # computed once per setting and kept in <data_dir>/MNIST/probe-baselines.json (delete it to
    # recompute). The PCA probe, on K numbers, takes seconds; it is kept per K beside them.
    path = os.path.join(data_dir, "MNIST", "probe-baselines.json")
    # Everything the numbers depend on is in the key; change BASELINES_VERSION with the code above.
    key = (f"v{BASELINES_VERSION} {dataset} train={splits.train_images.shape[0]} test={splits.test_images.shape[0]} "
           f"seeds={SEEDS['train']},{SEEDS['test']} probe={fit_probe.__defaults__} torch={torch.__version__}")
    try:
        with open(path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict) or not isinstance(cache.get(key, {}), dict):
        cache = {}  # not a file this code wrote: start it again
    if key not in cache or f"pca K={k}" not in cache[key]:
        inputs = (flat_inputs(splits.train_images, dataset, SEEDS["train"]), splits.train_labels,
                  flat_inputs(splits.test_images, dataset, SEEDS["test"]), splits.test_labels)
        if key not in cache:
            say(f"  the probe on the pixels of the {splits.train_images.shape[0]} training inputs: computed once "
                f"(the longest step of a first run) and kept in {path}")
            cache[key] = pixel_baselines(*inputs, dataset)
        cache[key][f"pca K={k}"] = pca_baseline(*inputs, k)
        try:
            atomic_write(path, lambda f: f.write(json.dumps(cache, indent=1).encode()))
        except OSError:
            say(f"  (could not write {path}: it will be computed again next time)")
    pixels = {name: cache[key][name] for name in ("pixels", "pixels_squared") if name in cache[key]}
    return pixels | {"pca": cache[key][f"pca K={k}"]}


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


def smoothed(values, window):
    # The mean of the last `window` values at each step (fewer at the start): s_i = mean(v[i-w+1 .. i])
    v = np.cumsum(np.concatenate([[0.0], np.asarray(values, np.float64)]))
    i = np.arange(1, len(v))
    return (v[i] - v[np.maximum(0, i - window)]) / (i - np.maximum(0, i - window))


def loss_axis(step_losses, test_losses, window):
    """(lo, hi): the y-axis of the training curve. It spans the smoothed training loss after the first
    5% of the steps and every test loss, plus 5% of that span on each side; the first steps, often
    far higher (the VAE's by thousands of nats), are cut at the top edge."""
    shown = np.concatenate([smoothed(step_losses, window)[len(step_losses) // 20:], test_losses])
    lo, hi = shown.min(), shown.max()
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.05
    return lo - pad, hi + pad


LOSS_MARGINS = dict(left=64, right=16, top=24, bottom=40)  # pixels around the plot area of loss.ppm


def loss_curve_image(step_losses, test_losses, steps_per_epoch, width=720, height=360):
    """The training curve (height, width, 3) uint8: the loss of every step (light blue), its mean over
    the last `loss_window(n)` steps (blue), the test loss after each epoch (orange dots), a grey line
    at the end of each epoch. With n steps, (lo, hi) = loss_axis and the plot area's corners at
    (left, top) and (width - right - 1, height - bottom - 1) (LOSS_MARGINS), the loss v after t steps
    (of epoch e's test loss: t = e * steps_per_epoch) is drawn at
        column left + floor(t / n * (width - left - right - 1) + 0.5)
        row    top + floor((hi - v) / (hi - lo) * (height - top - bottom - 1) + 0.5), kept inside.
    """
    n, m = len(step_losses), LOSS_MARGINS
    window = loss_window(n)
    lo, hi = loss_axis(step_losses, test_losses, window)
    plot_w, plot_h = width - m["left"] - m["right"] - 1, height - m["top"] - m["bottom"] - 1

    def column(t):
        return m["left"] + np.floor(np.asarray(t, np.float64) / n * plot_w + 0.5).astype(int)

    def row(v):
        r = m["top"] + np.floor((hi - np.asarray(v, np.float64)) / (hi - lo) * plot_h + 0.5).astype(int)
        return np.clip(r, m["top"], m["top"] + plot_h)

    picture = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    right, bottom = m["left"] + plot_w, m["top"] + plot_h
    decimals = max(0, -int(np.floor(np.log10(nice_ticks(lo, hi, step_only=True)))))  # as many as the step needs
    for tick in nice_ticks(lo, hi):  # the y-axis: a few round numbers, a faint line across each
        draw.line([(m["left"], int(row(tick))), (right, int(row(tick)))], fill=(235, 235, 235))
        label = f"{tick:.{decimals}f}"
        draw.text((m["left"] - 6, int(row(tick))), label, fill=(0, 0, 0), anchor="rm")
    epochs = len(test_losses)
    every = max(1, int(np.ceil(epochs / 20)))  # at most 20 epoch labels
    for e in range(epochs + 1):  # the x-axis: the end of each epoch
        x = int(column(e * steps_per_epoch))
        if 0 < e < epochs:
            draw.line([(x, m["top"]), (x, bottom)], fill=(190, 190, 190))
        if e % every == 0 or e == epochs:
            draw.text((x, bottom + 6), str(e), fill=(0, 0, 0), anchor="mt")
    draw.text(((m["left"] + right) // 2, height - 4), f"epoch ({steps_per_epoch} steps each)", fill=(0, 0, 0),
              anchor="mb")
    draw.rectangle([m["left"], m["top"], right, bottom], outline=(120, 120, 120))
    t = np.arange(1, n + 1)  # the loss of step t, drawn after t steps
    for values, colour in ((step_losses, (174, 199, 232)), (smoothed(step_losses, window), (31, 119, 180))):
        draw.line(list(zip(column(t).tolist(), row(values).tolist())), fill=colour)
    for e, v in enumerate(test_losses, start=1):
        x, y = int(column(e * steps_per_epoch)), int(row(v))
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(255, 127, 14))
    draw.text((m["left"], 5), f"training loss of each step (light) and its mean over {window} steps; "
              f"test loss after each epoch (orange)", fill=(0, 0, 0))
    return np.array(picture)


def loss_window(n_steps):
    return max(1, n_steps // 100)  # the smoothing window: a hundredth of the steps


def nice_ticks(lo, hi, count=5, step_only=False):
    # About `count` round values (1, 2 or 5 times a power of ten apart) between lo and hi.
    raw = (hi - lo) / count
    power = 10.0 ** np.floor(np.log10(raw))
    step = next(f * power for f in (1, 2, 5, 10) if f * power >= raw)
    if step_only:
        return step
    return [k * step for k in range(int(np.ceil(lo / step)), int(np.floor(hi / step)) + 1)]


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


def write_report(out, config, history, metrics=None):
    """report.md: the run on one page, for any Markdown viewer: the command that rebuilds it, the
    summary's lines (metrics.json's numbers, as print_summary prints them), then every picture in
    the folder with a line saying what each row is, in the order to look at them."""
    config = with_old_defaults(config)  # an older run's command names what it trained with
    flags = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in config.items()
                     if key != "model" and value is not None)  # None: a setting of another model's
    lines = [f"# {config['model'].upper()} on {'varianceMNIST' if config['dataset'] == 'variance' else 'MNIST'}", "",
             "The run, rebuilt by:", "", f"    python train.py --model {config['model']} {flags}", ""]
    if history.get("train_seconds") is not None:
        lines += [f"Trained {len(history.get('loss_history', []))} epochs in {history['train_seconds']:.1f} s.", ""]
    if metrics is None:
        lines += ["Not evaluated (`--no-eval`): `python evaluate.py model.pt` writes the numbers and the other "
                  "pictures.", ""]
    else:
        lines += ["## The numbers, each beside what gives it meaning", "",
                  "As the run printed them; every number is in `metrics.json`.", "", "```text",
                  *summary_lines(metrics), "```", ""]
    pictures = [(name, caption) for name, caption in picture_captions(config, history)
                if os.path.exists(os.path.join(out, name + ".png"))]
    if pictures:
        lines += ["## The pictures", ""]
    for name, caption in pictures:
        lines += [f"**{name}.png**: {caption}", "", f"![{name}]({name}.png)", ""]
    atomic_write(os.path.join(out, "report.md"), lambda f: f.write("\n".join(lines).encode()))


def picture_captions(config, history):
    # (picture, what it shows), in the order a learner should look at them: did it train, what it
    # does to a digit, what its code space holds. The rows named as recon_rows & co. draw them.
    model, signed = config["model"], config["dataset"] == "variance"
    steps, epochs = history.get("step_losses") or [], len(history.get("test_loss_history") or [])
    captions = []
    if steps:
        window = loss_window(len(steps))
        lo, hi = loss_axis(steps, history["test_loss_history"], window)
        # the first steps, which loss_axis leaves out: the first twentieth of the run
        cut = int((smoothed(steps, window) > hi).sum())
        loss = (f"the training loss of each of the {len(steps)} steps (light blue) and its mean over the last "
                f"{window} (blue); the test loss after each of the {epochs} epochs (orange dots)")
        if cut:
            loss += (f"; the y-axis leaves out the first steps: the mean is above it for {cut} steps (the highest "
                     f"loss of a step: {max(steps):.5g})")
        warmup = int(np.ceil(config.get("kl_warmup", 0) * len(steps)))  # train.kl_weight: the steps with weight < 1
        if warmup:
            loss += (f"; in the first {warmup} steps the KL term's weight rises from 0 to 1 (the KL warm-up), so the "
                     f"training loss is below the -ELBO there; the test loss is the -ELBO itself")
        if config.get("noise_start") not in (None, config["noise_std"]):  # train.noise_level
            loss += (f"; the corruption goes from sigma_n = {config['noise_start']:g} at the first step to "
                     f"{config['noise_std']:g} at the last, and the training loss with it; the test loss is at "
                     f"{config['noise_std']:g} throughout")
        captions.append(("loss", loss))
    rows = ["the digit s (the first test image of each class)"]
    rows += ["the input x = s * e (mid-grey is 0)"] if signed else []
    rows += {"bae": ["the reconstruction"],
             "dae": ["the corrupted input x~ = x + n", "the output x~ * m", "the mask m"]
             + (["the optimal mask s^2 / (s^2 + sigma_n^2)"] if signed and config["noise_std"] > 0 else []),
             "vae": ["the predictive mean mu_x", "the predictive standard deviation sigma_x",
                     "a draw x ~ N(mu_x, sigma_x^2)"]}[model]
    captions.append(("recon", "rows, top to bottom: " + "; ".join(rows)))
    shape = {"bae": "images", "dae": "masks", "vae": "predictive standard deviations"}[model]
    captions.append(("interpolation", f"each row: a test digit, the decoded {shape} of 10 codes on the straight "
                                      f"line from its code to the next digit's"
                                      + (" (codes of corrupted inputs)" if model == "dae" else "") + ", that digit"))
    if model == "vae":
        captions.append(("traversal", "each row: one code dimension, the most KL first: the predictive standard "
                                      "deviation as that dimension of one digit's code goes from -3 to +3; a flat "
                                      "row is a dimension in no use"))
        captions.append(("samples", "codes drawn from the prior N(0, I): each pair of rows, their predictive "
                                    "standard deviations, then a draw x ~ p(x | z) of each"))
    captions.append(("neighbours", "each row: a test digit, then the 8 training images whose codes are nearest to "
                                   "its code, nearest first"))
    captions.append(("pca_test", "the 10000 test codes on their first two principal components, one colour per "
                                 "digit"))
    return captions


class OneLineParser(argparse.ArgumentParser):
    # argparse prints its whole usage on an error; a person needs just the line that says what
    # was wrong, and where to look. (train.py uses it too.)
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def pick_device(name):
    """torch.device for --device: auto picks cuda, then mps, then cpu. (train.py uses it too.)"""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available to this torch; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: no Apple MPS device is available to this torch; use --device cpu")
    return torch.device(name)


def file_error(e):
    # One line for an OSError (a full disk, a folder removed or not writable). (train.py uses it too.)
    where = f" ({e.filename})" if e.filename else ""
    return f"could not read or write a file{where}: {e.strerror or e}"


def error_line(e):
    """(the one line, the exit status) for an error a person can act on, the same from both commands
    (train.py uses it too): a UserError or DataError says what to fix (2); an OSError names the file (1)."""
    if isinstance(e, (UserError, data.DataError)):
        return f"error: {e}", 2
    return f"error: {file_error(e)}", 1


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
    try:
        evaluate_checkpoint(args.checkpoint, args.data_dir, pick_device(args.device), args.is_images, args.is_samples)
    except KeyboardInterrupt:
        print("interrupted: the files written so far are whole; run it again to redo them all", file=sys.stderr)
        return 130
    except (UserError, data.DataError, OSError) as e:
        line, code = error_line(e)
        print(line, file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
