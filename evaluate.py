"""Evaluate a trained autoencoder: what its codes know, how good its outputs are, and pictures.

    python evaluate.py runs/vae-variance/model.pt      # train.py runs this after training

Every number beside what gives it meaning: the linear probe on the codes beside the same probe on the
pixels, their squares, their PCA, the untrained encoder, the nearest codes, few labels; the BAE's error
beside PCA's, the DAE's beside the optimal denoiser's, the VAE's -ELBO beside -log p(x) and the true
model's. Writes report.md, metrics.json, the codes and the pictures beside the checkpoint. Read in this
order: the probe, PCA, the codes, the baselines, the quality numbers, the pictures, EVALUATION (what
differs between the models), evaluate_checkpoint. It needs ae.py and data.py beside it.
"""

import argparse
import copy
import json
import os
import sys
from collections import namedtuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.utils import make_grid, save_image

import ae  # the models, and the formulas evaluation measures them by (corruption, optimal mask, -ELBO)
import data  # MNIST and the varianceMNIST draw

# Evaluation's noise comes from CPU generators with these seeds, one per use, so every device sees the
# same numbers and the steps' order changes none: "train", "test": the inputs' varianceMNIST draws;
# "quality": the DAE's corruption, the VAE's z; "likelihood": -log p(x)'s z; "labels": the few labels.
SEEDS = {"train": 2024, "test": 2025, "quality": 2026, "likelihood": 2027, "recon": 2028, "interpolation": 2029,
         "samples": 2030, "labels": 2031}


# -------------------------------------------------------------------------------------------------
# The linear probe: multinomial logistic regression, fitted by L-BFGS on the training codes. The
# usual test of a representation: freeze the encoder, fit a linear classifier on the training images'
# codes, read its accuracy on the test images'. If a linear map of K numbers recovers the digit, the
# code holds the digit's shape.


def standardiser(train_codes):
    # codes -> (codes - mean) / std with the statistics of the training codes (N, K), float64 on the CPU
    X = train_codes.detach().double().cpu()
    mean, std = X.mean(0), X.std(0).clamp_min(1e-12)
    return lambda codes: (codes.detach().double().cpu() - mean) / std


def fit_probe(codes, labels, n_classes=10, l2=1e-4, max_iter=200, dtype=torch.float64):
    """Returns a function codes -> predicted labels. Codes (N, K) float, labels (N,) int64."""
    # Standardised codes give L-BFGS a well-conditioned problem and the L2 penalty the same weight in
    # every dimension. Deterministic on the CPU; float64 for codes, float32 as good and faster for pixels.
    standardise = standardiser(codes)
    X, y = standardise(codes).to(dtype), labels.cpu()
    W = torch.zeros(n_classes, X.shape[1], dtype=dtype, requires_grad=True)  # (classes, K): F.linear's layout
    b = torch.zeros(n_classes, dtype=dtype, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=100,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():  # cross-entropy of softmax(X W^T + b), plus an L2 penalty: a finite optimum if separable
        opt.zero_grad()
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
    # fitted on the first 5/6 of the training codes and read on the last 1/6, whose labels it never saw.
    n_fit = train_codes.shape[0] - train_codes.shape[0] // 6
    return probe_accuracy(train_codes[:n_fit], train_labels[:n_fit], train_codes[n_fit:], train_labels[n_fit:])


def few_label_probes(train_x, train_labels, test_x, test_labels, dtype=torch.float64, sizes=(100, 1000), repeats=5):
    # Why representations are learnt: a classifier from few labels. {n: the probe's test accuracy when
    # fitted on n labelled training codes only, the mean over `repeats` random subsets, the same ones
    # for every encoder and input}, for each n below the number of training codes.
    gen, result = torch.Generator().manual_seed(SEEDS["labels"]), {}
    for n in (n for n in sizes if n < len(train_labels)):
        subsets = [torch.randperm(len(train_labels), generator=gen)[:n] for _ in range(repeats)]
        result[str(n)] = sum(probe_accuracy(train_x[i], train_labels[i], test_x, test_labels, dtype)
                             for i in subsets) / repeats
    return result


# -------------------------------------------------------------------------------------------------
# A non-linear readout beside the linear probe: the majority digit of the nearest training codes.
# The probe asks whether flat boundaries in code space separate the digits; the k-nearest-neighbour
# readout only whether codes of the same digit lie near each other. Where it reads much more, the
# code holds the digit in a form a line cannot read. Distances are those of standardised codes.


def nearest_training_codes(train_codes, query_codes, k, chunk=1000):
    """Indices (M, k) of the k (at most N) training codes (N, K) nearest to each query code (M, K)."""
    k, standardise = min(k, train_codes.shape[0]), standardiser(train_codes)
    X = standardise(train_codes).float()  # float32: the (chunk, N) distances below take most of the time
    x_sq = X.pow(2).sum(1)  # (N,)
    nearest = []
    for q in query_codes.split(chunk):
        # ||q - x||^2 = ||q||^2 - 2 q.x + ||x||^2; ||q||^2 is the same for a whole row, so it is left out
        dist = torch.addmm(x_sq, standardise(q).float(), X.T, alpha=-2)  # (chunk, N)
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
    """(mean (D,), components (k, D)) of the rows of X (N, D), in float64; project with `project`."""
    X = X.double()  # float64: forming Xc^T Xc below squares the condition number
    mean, Xc = X.mean(0), X - X.mean(0)  # Xc: (N, D), centred
    # The principal directions are the eigenvectors of the covariance Xc^T Xc / (N - 1), the variance
    # along each its eigenvalue (as Xc's right singular vectors, but faster when N >> D: 60000 x 784).
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
    # (s, x) chunks on `device`: intensities s and inputs x, drawn from a CPU generator seeded `seed`
    gen = torch.Generator().manual_seed(seed)
    for part in images_uint8.split(chunk):
        yield data.to_float(part).to(device), data.make_batch(part, dataset, generator=gen).to(device)


def flat_inputs(images_uint8, dataset, seed):
    return torch.cat([x.flatten(1) for _, x in fixed_inputs(images_uint8, dataset, "cpu", seed)])  # (N, 784), CPU


@torch.no_grad()
def codes_of(model, images_uint8, dataset, device, seed):
    return torch.cat([model.encode(x).cpu() for _, x in fixed_inputs(images_uint8, dataset, device, seed)])  # (N, K)


# The DAE's encoder only ever sees corrupted images x~ in training, so its BatchNorm statistics (what
# each subtracts and divides by in eval mode) are those of x~, pixel variance s^2 + sigma_n^2; fed
# the clean images x whose codes we study, it would hand on smaller activations than it learnt on.
# Re-estimating the statistics on clean images, on a copy, fixes that: "AdaBN" (Li et al., 2016).


@torch.no_grad()
def adapt_batchnorm(model, batches):
    """The encoder's BatchNorm statistics re-estimated: the average over `batches` (B, 1, 28, 28) of theirs."""
    norms = [m for m in model.encoder.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None: a plain average over all the batches, not a running one
    was_training = model.training
    model.train()  # in train mode, BatchNorm updates its running statistics as it goes
    for x in batches:
        model.encode(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.train(was_training)


def adapted_copy(model, train_images, dataset, device):
    # A copy with BatchNorm statistics of 10000 clean training inputs (a last chunk of one left out)
    batches = (x for _, x in fixed_inputs(train_images[:10000], dataset, device, SEEDS["train"]) if x.shape[0] > 1)
    return adapt_batchnorm(copy.deepcopy(model), batches)


# MNIST as evaluation reads it: uint8 images (N, 1, 28, 28) and int64 labels (N,), on the CPU.
Splits = namedtuple("Splits", "train_images train_labels test_images test_labels")


def codes_and_labels(encoder, splits, dataset, device):
    """The arguments of probe_accuracy for one encoder: its train codes, labels, test codes, labels."""
    return (codes_of(encoder, splits.train_images, dataset, device, SEEDS["train"]), splits.train_labels,
            codes_of(encoder, splits.test_images, dataset, device, SEEDS["test"]), splits.test_labels)


def codes_and_readouts(model, config, splits, device, corrupted):
    """The codes, (train (N, K), test (10000, K)), and what is read from them: the probes, the k-NN
    readout, a VAE's active units. An encoder trained on `corrupted` inputs (the DAE's) is read from a
    copy with BatchNorm statistics of clean images, and the probe on its own statistics reported too."""
    metrics, encoder = {}, model
    if corrupted:
        metrics["probe_test_accuracy_unadapted"] = probe_accuracy(*codes_and_labels(model, splits, config["dataset"],
                                                                                    device))
        encoder = adapted_copy(model, splits.train_images, config["dataset"], device)
    codes_train, _, codes_test, _ = codes_and_labels(encoder, splits, config["dataset"], device)
    predict = fit_probe(codes_train, splits.train_labels)
    metrics["probe_train_accuracy"] = accuracy(predict, codes_train, splits.train_labels)
    metrics["probe_test_accuracy"] = accuracy(predict, codes_test, splits.test_labels)
    if codes_train.shape[0] >= 12:  # at least 2 held-out codes
        metrics["probe_validation_accuracy"] = probe_validation_accuracy(codes_train, splits.train_labels)
    metrics["knn_test_accuracy"] = knn_accuracy(codes_train, splits.train_labels, codes_test, splits.test_labels)
    metrics["probe_few_labels"] = few_label_probes(codes_train, splits.train_labels, codes_test, splits.test_labels)
    if hasattr(model, "encode_dist"):  # the codes are the means of a posterior q(z | x)
        metrics["active_units"] = active_units(codes_test)
    return (codes_train, codes_test), metrics


def active_units(posterior_means, threshold=0.01):
    # A code dimension is in use when its posterior mean moves with the image, its variance over the test
    # images above 0.01 (Burda et al., 2015); a collapsed one has q(z_j | x) = p(z_j): it carries nothing.
    return int((posterior_means.double().var(0) > threshold).sum())


# -------------------------------------------------------------------------------------------------
# Baselines: the same probe on what the encoder starts from.
#
# In varianceMNIST every pixel has mean 0 whatever the digit, so a linear readout of the pixels x sees
# almost nothing; the digit is in x^2, whose mean is s^2: an encoder has to compute something like it.
# The untrained encoder (the seed's initial weights) says how much comes from the architecture alone.


def pixel_baselines(train_x, train_labels, test_x, test_labels, dataset):
    # The probe on the pixels and (varianceMNIST) their squares, with all the labels and with few
    result = {}
    for name, f in [("pixels", lambda x: x)] + [("pixels_squared", torch.square)] * (dataset == "variance"):
        features = f(train_x), train_labels, f(test_x), test_labels, torch.float32  # (60000, 784): squared once
        result[name], result[name + "_few_labels"] = probe_accuracy(*features), few_label_probes(*features)
    return result


def pca_baseline(train_x, train_labels, test_x, test_labels, k):
    mean, comps = pca(train_x, k)  # fitted on the training inputs
    return probe_accuracy(project(train_x, mean, comps), train_labels, project(test_x, mean, comps), test_labels)


def untrained_model(model_class, config):
    # The model as train.py initialised it (the same seed, then the constructor); fork_rng keeps the
    # caller's random generators as they were.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        return model_class(config["n_components"])


def baselines(config, splits, device, data_dir):
    """The probe on the inputs (cached beside MNIST, below the line) and on the untrained encoder."""
    untrained = untrained_model(ae.MODELS[config["model"]], config).to(device).eval()
    if any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in untrained.encoder.modules()):  # from the data
        untrained = adapted_copy(untrained, splits.train_images, config["dataset"], device)
    return {**cached_input_baselines(data_dir, splits, config["dataset"], config["n_components"]),
            "untrained": probe_accuracy(*codes_and_labels(untrained, splits, config["dataset"], device))}


# -------------------------------------------------------------------------------------------------
# Quality of the outputs, each beside a baseline or the optimum: (model, config, splits, device, options).


@torch.no_grad()
def bae_quality(model, config, splits, device, **_):
    # Reconstruction MSE in [0, 1] pixel units, beside PCA with the same K: the best any *linear*
    # K-dimensional code can do, and the baseline the nonlinear autoencoder has to beat.
    k, dataset = config["n_components"], config["dataset"]
    sq, pca_sq, n = 0.0, 0.0, splits.test_images.shape[0] * 784
    mean, comps = pca(flat_inputs(splits.train_images, dataset, SEEDS["train"]), k)  # fitted on the training inputs
    for _, x in fixed_inputs(splits.test_images, dataset, device, SEEDS["test"]):
        sq += (model(x) - x).pow(2).sum().item()
        xf = x.cpu().flatten(1).double()  # (B, 1, 28, 28) -> (B, 784)
        recon = project(xf, mean, comps) @ comps + mean  # onto the K directions and back
        pca_sq += (recon - xf).pow(2).sum().item()
    return {"test_mse": sq / n, "pca_test_mse": pca_sq / n}


def split_by_stroke(excess, s):
    # The sums of `excess` (B, 1, 28, 28) over the stroke pixels (s > 0) and the background (s = 0)
    excess, s = excess.cpu().double(), s.cpu()
    return excess[s > 0].sum().item(), excess[s == 0].sum().item()


@torch.no_grad()
def dae_quality(model, config, splits, device, **_):
    # Denoising MSE beside the Bayes-optimal denoiser that knows each pixel's true variance s^2:
    #     g*(x~) = x~ * s^2 / (s^2 + sigma_n^2)      (ae.optimal_mask, derived in ae.py)
    # The ratio is >= 1 up to sampling noise. The excess is split between the digit's strokes (s > 0)
    # and the background (s = 0, where the optimal mask is exactly 0).
    sigma_n, n = config["noise_std"], splits.test_images.shape[0] * 784
    gen = torch.Generator().manual_seed(SEEDS["quality"])  # the corruption's fixed noise
    sq = oracle_sq = stroke = background = 0.0
    for s, x in fixed_inputs(splits.test_images, config["dataset"], device, SEEDS["test"]):
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
    # The true generative model's expected NLL with the VAE's floor, variance v = max(s^2, exp(min_logvar)):
    #     E_x[-log N(x | 0, v)] = 1/2 * sum_i (log v_i + s_i^2 / v_i)      (since E[x_i^2] = s_i^2)
    # No model with this floor can beat it on average, so the gap is what the VAE still misses.
    v = s.pow(2).clamp_min(np.exp(min_logvar))
    nll = 0.5 * (v.log() + s.pow(2) / v)  # s's shape: one term per pixel
    return nll if per_pixel else nll.flatten(1).sum(1)


IS_IMAGES, IS_SAMPLES = 500, 100  # the VAE's -log p(x): test images and samples of z per image


@torch.no_grad()
def vae_quality(model, config, splits, device, is_images=IS_IMAGES, is_samples=IS_SAMPLES):
    # Negative ELBO per test image (nats, without the 784/2 log 2pi constant), one fixed sample of z
    # each, beside the true model's expected NLL (oracle_nll), the distance split three ways: the KL
    # (what the code costs), the reconstruction's excess on the strokes (s > 0) and on the background
    # (s = 0, where the true variance is the floor). A dimension with KL ~0 is unused ("collapsed").
    kl, nll, oracle, stroke, background, kl_per_dimension = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    gen = torch.Generator().manual_seed(SEEDS["quality"])
    for s, x in fixed_inputs(splits.test_images, config["dataset"], device, SEEDS["test"]):
        kl_terms, nll_terms = ae.neg_elbo_terms(model, x, gen)  # (B, K), (B, 1, 28, 28)
        kl += kl_terms.sum(dim=1).sum().item()
        nll += nll_terms.flatten(1).sum(dim=1).sum().item()
        kl_per_dimension = kl_per_dimension + kl_terms.cpu().double().sum(0)  # (K,)
        oracle_terms = oracle_nll(s, model.min_logvar.item(), per_pixel=True)  # (B, 1, 28, 28)
        oracle += oracle_terms.flatten(1).sum(1).sum().item()
        on_strokes, on_background = split_by_stroke(nll_terms - oracle_terms, s)
        stroke, background = stroke + on_strokes, background + on_background
    # the bound's two gaps on the first test images: -ELBO >= -log p(x) (the slack of q(z | x)) >= the NLL
    images, n = splits.test_images[:is_images], splits.test_images.shape[0]
    neg_log_p, neg_elbo, subset_oracle = likelihood_estimate(model, images, config["dataset"], device, is_samples)
    metrics = {"test_neg_elbo": (kl + nll) / n, "test_kl": kl / n, "test_nll": nll / n, "subset_size": len(images),
               "kl_per_dimension": (kl_per_dimension / n).tolist(), "is_samples": is_samples,
               "subset_neg_elbo": neg_elbo, "test_nll_is": neg_log_p}
    if config["dataset"] == "variance":  # the true model is known
        metrics.update(oracle_nll=oracle / n, subset_oracle_nll=subset_oracle, gap_to_true_model={
            "kl": kl / n, "stroke_pixels": stroke / n, "background_pixels": background / n})
    return metrics


@torch.no_grad()
def likelihood_estimate(model, images, dataset, device, n_samples):
    """(-log p(x), -ELBO, the true model's NLL), averages over `images` (uint8): -log p(x) importance
    sampled with n_samples draws of z per image (ae.importance_sampled_nll), the -ELBO from them."""
    gen = torch.Generator().manual_seed(SEEDS["likelihood"])
    neg_log_p = neg_elbo = oracle = 0.0
    for s, x in fixed_inputs(images, dataset, device, SEEDS["test"], chunk=100):
        nlp, nelbo = ae.importance_sampled_nll(model, x, n_samples, generator=gen)
        neg_log_p, neg_elbo = neg_log_p + nlp.sum().item(), neg_elbo + nelbo.sum().item()
        oracle += oracle_nll(s, model.min_logvar.item()).sum().item()
    return neg_log_p / len(images), neg_elbo / len(images), oracle / len(images)


# -------------------------------------------------------------------------------------------------
# Pictures: rows of digits, tiled by make_grid; each function returns them with report.md's caption.


def to_unit(images, signed=False):
    # Pixel values in [0, 1]: intensities as they are; signed ones (varianceMNIST) [-1, 1] -> [0, 1]
    images = images.detach().float().cpu()
    return ((images + 1) / 2 if signed else images).clamp(0, 1)


def grid(rows):  # rows: a list of (n, 1, 28, 28) tensors in [0, 1], a row of the picture each
    return make_grid(torch.cat(rows), nrow=rows[0].shape[0], padding=2, pad_value=1.0)  # (3, H, W)


@torch.no_grad()
def recon_rows(model, config, s, x, model_rows):
    # recon.pgm of test digits s, inputs x (10, 1, 28, 28): s, x, then model_rows' [(row, what it shows)]
    signed = config["dataset"] == "variance"
    rows = [(to_unit(s), "the digit s (the first test image of each class)")]
    rows += [(to_unit(x, signed=True), "the input x = s * e (mid-grey is 0)")] if signed else []
    rows += model_rows(model, signed, s, x, config, torch.Generator().manual_seed(SEEDS["recon"]))
    return [row for row, _ in rows], "rows, top to bottom: " + "; ".join(what for _, what in rows)


def dae_rows(model, signed, s, x, config, gen):
    x_noisy = ae.corrupt(x, config["noise_std"], gen)
    mask = model.mask(x_noisy)
    rows = [(to_unit(x_noisy, signed), "the corrupted input x~ = x + n"),
            (to_unit(x_noisy * mask, signed), "the output x~ * m"), (to_unit(mask), "the mask m")]
    if signed and config["noise_std"] > 0:  # what the mask should be
        rows.append((to_unit(ae.optimal_mask(s, config["noise_std"])), "the optimal mask s^2 / (s^2 + sigma_n^2)"))
    return rows


def vae_rows(model, signed, s, x, config, gen):
    mu_z, logvar_z = model.encode_dist(x)
    mu_x, logvar_x = model.decode(mu_z)  # the decoder at the posterior mean
    draw = ae.reparameterize(mu_x, logvar_x, gen)  # x ~ N(mu_x, sigma_x^2)
    return [(to_unit(mu_x, signed), "the predictive mean mu_x"),
            (to_unit(torch.exp(0.5 * logvar_x)), "the predictive standard deviation sigma_x"),
            (to_unit(draw, signed), "a draw x ~ N(mu_x, sigma_x^2)")]


@torch.no_grad()
def interpolation_rows(model, config, s, x, parts, steps=10):
    # A row per pair of digits (0, 1), (2, 3), ... of s, x: a, the decoded (1 - t) z_a + t z_b for t in [0, 1], b
    if parts["corrupted"]:  # its decoder learned from the codes of corrupted inputs
        x = ae.corrupt(x, config["noise_std"], torch.Generator().manual_seed(SEEDS["interpolation"]))
    z = model.encode(x)  # (10, K); the VAE's posterior means
    t = torch.linspace(0, 1, steps, device=z.device)[:, None]  # (steps, 1)
    what, outline = parts["outline"]  # what the decoder draws of a code, in [0, 1]
    rows = []
    for a in range(0, 10, 2):
        line = (1 - t) * z[a] + t * z[a + 1]  # (steps, K)
        rows.append(torch.cat([to_unit(s[a:a + 1]), outline(model, line, config), to_unit(s[a + 1:a + 2])]))
    return rows, (f"each row: a test digit, the decoded {what} of {steps} codes on the straight line from its code to "
                  f"the next digit's{' (codes of corrupted inputs)' * parts['corrupted']}, that digit")


def vae_outline(model, z, config=None):  # decoded codes (B, K) as predictive stds: the means are about 0
    return to_unit(torch.exp(0.5 * model.decode(z)[1]))


@torch.no_grad()
def traversal_rows(model, config, x, metrics, device, steps=9):
    # A row per code dimension d, most KL first: the predictive std of z = mu + c e_d, c from -3 to +3
    mu = model.encode(x[:1])  # (1, K), the posterior mean of one digit
    c = torch.linspace(-3, 3, steps, device=mu.device)
    rows = []
    for d in torch.tensor(metrics["kl_per_dimension"]).argsort(descending=True, stable=True).tolist():
        z = mu.repeat(steps, 1)  # (steps, K)
        z[:, d] += c
        rows.append(vae_outline(model, z))
    return rows, ("each row: one code dimension, the most KL first: the predictive standard deviation as that "
                  "dimension of one digit's code goes from -3 to +3; a flat row is a dimension in no use")


@torch.no_grad()
def sample_rows(model, config, x, metrics, device, n=50):
    # z ~ p(z) = N(0, I), then a row of predictive stds followed by a row of draws x ~ p(x | z)
    gen = torch.Generator().manual_seed(SEEDS["samples"])
    z = torch.randn(n, config["n_components"], generator=gen).to(device)
    mu_x, logvar_x = model.decode(z)
    std_x, draw = torch.exp(0.5 * logvar_x), ae.reparameterize(mu_x, logvar_x, gen)  # x ~ N(mu_x, sigma_x^2)
    rows = []
    for i in range(0, n, 10):
        rows += [to_unit(std_x[i:i + 10]), to_unit(draw[i:i + 10], signed=True)]
    return rows, ("codes drawn from the prior N(0, I): each pair of rows, their predictive standard deviations, "
                  "then a draw x ~ p(x | z) of each")


def neighbour_rows(splits, codes_train, codes_test, show, k=8):
    # (rows, caption): a row per shown test digit, then the k training images nearest to it by code
    nearest = nearest_training_codes(codes_train, codes_test[show], k)  # (10, k)
    rows = [to_unit(data.to_float(torch.cat([splits.test_images[i:i + 1], splits.train_images[row]])))
            for i, row in zip(show.tolist(), nearest)]
    return rows, f"each row: a test digit, then the {k} training images whose codes are nearest to its, nearest first"


def save_pictures(out, model, config, splits, codes, metrics, device, parts):
    # Each picture, of the first test image of each digit (codes: (train, test)); {picture: caption}
    show = torch.stack([torch.nonzero(splits.test_labels == d)[0, 0] for d in range(10)])
    s, x = next(fixed_inputs(splits.test_images[show], config["dataset"], device, SEEDS["test"]))  # (10, 1, 28, 28)
    pictures = {"recon": recon_rows(model, config, s, x, parts["rows"]),
                "interpolation": interpolation_rows(model, config, s, x, parts),
                **{name: rows(model, config, x, metrics, device) for name, rows in parts["pictures"].items()},
                "neighbours": neighbour_rows(splits, *codes, show)}
    for name, (rows, _) in pictures.items():
        save_picture(os.path.join(out, name), grid(rows))
    return {name: caption for name, (_, caption) in pictures.items()}


# -------------------------------------------------------------------------------------------------
# What differs between the models in evaluation, one entry each: whether the encoder learnt from
# corrupted inputs (codes_and_readouts, interpolation_rows), what the quality numbers stand beside,
# the quality numbers and their summary lines, recon.png's rows, what the decoder draws of a code
# (the digit's outline), and the pictures only one model has. A fourth model adds an entry here.


def dae_lines(m):
    return [f"  with the BatchNorm statistics of corrupted inputs: {m['probe_test_accuracy_unadapted']:.2%}",
            f"denoising: MSE {m['test_mse']:.5f}" + (
                f", {m['mse_over_oracle']:.3f} x the optimal denoiser's {m['oracle_mse']:.5f}; the excess "
                f"{m['excess_mse']['stroke_pixels']:.5f} on the strokes, {m['excess_mse']['background_pixels']:.5f} "
                f"on the background" if "oracle_mse" in m else "")]


def vae_lines(m):
    true_model = "oracle_nll" in m  # varianceMNIST: the true model is known
    lines = [f"-ELBO: {m['test_neg_elbo']:.1f} nats per image (KL {m['test_kl']:.1f} + reconstruction "
             f"{m['test_nll']:.1f})" + (f"; the true model's NLL {m['oracle_nll']:.1f}" if true_model else "")]
    if true_model:
        gap = m["gap_to_true_model"]
        lines.append(f"  the {m['test_neg_elbo'] - m['oracle_nll']:.1f} nats to the true model: KL {gap['kl']:.1f}, "
                     f"strokes {gap['stroke_pixels']:.1f}, background {gap['background_pixels']:.1f}")
    return lines + [f"  first {m['subset_size']} test images: -ELBO {m['subset_neg_elbo']:.1f} >= -log p(x) "
                    f"{m['test_nll_is']:.1f} ({m['is_samples']} samples of z)"
                    + (f" >= the true model's {m['subset_oracle_nll']:.1f}" if true_model else ""),
                    f"  code dimensions in use: {m['active_units']} of {len(m['kl_per_dimension'])}; KL of each: "
                    + " ".join(f"{v:.1f}" for v in sorted(m["kl_per_dimension"], reverse=True))]


EVALUATION = {
    "bae": dict(corrupted=False, reference="PCA", quality=bae_quality, lines=lambda m: [
                    f"reconstruction: MSE {m['test_mse']:.4f}, PCA with the same K {m['pca_test_mse']:.4f}"],
                rows=lambda model, signed, s, x, config, gen: [(to_unit(model(x), signed), "the reconstruction")],
                outline=("images", lambda model, z, config: to_unit(model.decoder(z), config["dataset"] == "variance")),
                pictures={}),
    "dae": dict(corrupted=True, reference="the optimal denoiser", quality=dae_quality, lines=dae_lines, rows=dae_rows,
                outline=("masks", lambda model, z, config: to_unit(model.decode(z))), pictures={}),
    "vae": dict(corrupted=False, reference="the true model (and -log p(x) by importance sampling)", quality=vae_quality,
                lines=vae_lines, rows=vae_rows, outline=("predictive standard deviations", vae_outline),
                pictures={"traversal": traversal_rows, "samples": sample_rows}),
}


def evaluate_checkpoint(path, data_dir, device="cpu", is_images=IS_IMAGES, is_samples=IS_SAMPLES):
    """Everything listed in the module docstring, written beside `path`; returns the metrics."""
    device = torch.device(device)
    model, config, history = load_model(path)
    model.to(device).eval()
    parts, out = EVALUATION[config["model"]], os.path.dirname(os.path.abspath(path))
    splits = load_splits(data_dir, config["train_size"])  # the probe fits the images the model trained on

    print(f"evaluating: the codes of {splits.train_images.shape[0] + 10000} images and the linear probe", flush=True)
    codes, metrics = codes_and_readouts(model, config, splits, device, parts["corrupted"])  # (train, test) codes
    print("evaluating: the same probe on the untrained encoder and on the inputs", flush=True)
    metrics["baselines"] = baselines(config, splits, device, data_dir)
    captions, pca_caption = save_loss_curve(out, history, config), save_codes(out, *codes, splits)
    print(f"evaluating: quality beside {parts['reference']}", flush=True)
    metrics.update(parts["quality"](model, config, splits, device, is_images=is_images, is_samples=is_samples))
    captions.update(save_pictures(out, model, config, splits, codes, metrics, device, parts), pca_test=pca_caption)
    # what the run was: its losses and timings from training, its config, where it ran, torch's version
    keys = ("loss_history", "test_loss_history", "train_seconds", "samples_per_second")
    metrics.update({k: history[k] for k in keys}, config=config, device=str(device), torch_version=torch.__version__)
    atomic_write(os.path.join(out, "metrics.json"), lambda f: f.write(json.dumps(metrics, indent=2).encode()))
    lines = summary_lines(metrics)
    write_report(out, config, history, lines, captions)
    print("\n".join(lines) + f"\nwrote metrics.json, codes, PCA, pictures and report.md to {out}")
    return metrics


def save_codes(out, codes_train, codes_test, splits):
    # The codes and labels as .npy; the test codes' 2-D PCA as points and as a picture (its caption)
    mean, comps = pca(codes_test, min(2, codes_test.shape[1]))
    pca_test = project(codes_test, mean, comps).numpy()  # (N, K) -> (N, 2)
    pca_test = np.pad(pca_test, ((0, 0), (0, 2 - pca_test.shape[1])))  # K = 1: the second axis is 0
    arrays = {"codes_train": codes_train.numpy(), "codes_test": codes_test.numpy(), "pca_test": pca_test,
              "labels_train": splits.train_labels.numpy(), "labels_test": splits.test_labels.numpy()}
    for name, array in arrays.items():
        atomic_write(os.path.join(out, name + ".npy"), lambda f: np.save(f, array))
    scatter = scatter_image(pca_test, splits.test_labels.numpy())  # (H, W, 3) uint8
    save_picture(os.path.join(out, "pca_test"), torch.from_numpy(scatter).permute(2, 0, 1) / 255.0, grey=False)
    return f"the {len(pca_test)} test codes on their first two principal components, one colour per digit"


def summary_lines(metrics):
    # Each number beside what gives it meaning (printed, and in report.md), the model's own lines last
    b, validation = metrics["baselines"], metrics.get("probe_validation_accuracy")
    return [f"probe: test accuracy {metrics['probe_test_accuracy']:.2%} (train {metrics['probe_train_accuracy']:.2%}"
            + (f", validation {validation:.2%}" if validation is not None else "") + "); "
            f"the 10 nearest training codes' majority {metrics['knn_test_accuracy']:.2%}",
            f"  the same probe on the pixels {b['pixels']:.2%}"
            + (f", their squares {b['pixels_squared']:.2%}" if "pixels_squared" in b else "")
            + f", their PCA {b['pca']:.2%}, the untrained encoder {b['untrained']:.2%}",
            *[f"  fitted on {n} labelled images only (mean of 5 draws): the codes {acc:.2%}, the pixels "
              f"{b['pixels_few_labels'][n]:.2%}" + (f", their squares {b['pixels_squared_few_labels'][n]:.2%}"
                                                    if "pixels_squared" in b else "")
              for n, acc in metrics["probe_few_labels"].items()],
            *EVALUATION[metrics["config"]["model"]]["lines"](metrics)]


# =================================================================================================
# The machinery. A first reading may stop here: atomic files, checkpoints and their one-line errors,
# the cached input baselines, the scatter plot and the training curve, report.md, the command line.
# =================================================================================================

# What evaluate_checkpoint writes beside model.pt (train.py removes them when it replaces model.pt).
OUTPUTS = ["metrics.json", "codes_train.npy", "codes_test.npy", "labels_train.npy", "labels_test.npy",
           "pca_test.npy", "pca_test.ppm", "pca_test.png", "recon.pgm", "recon.png", "interpolation.pgm",
           "interpolation.png", "neighbours.pgm", "neighbours.png", "samples.pgm", "samples.png", "traversal.pgm",
           "traversal.png", "loss.ppm", "loss.png", "loss_train.npy", "loss_test.npy", "report.md"]


def atomic_write(path, write):
    # Write to a temporary file in the same folder, flush it to disk, then rename it over `path`: a
    # rename is atomic, so a crash or a full disk leaves the old file or the new one, never a mix.
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


FORMAT = 2  # the version of the files train.py saves (model.pt, resume.pt); others are refused (2: the strided DAE)
# The settings that decide what train.py computes, saved in every checkpoint (train.py's list is this one).
CONFIG_KEYS = ["model", "dataset", "epochs", "batch_size", "lr", "lr_schedule", "noise_start", "kl_warmup",
               "n_components", "noise_std", "seed", "train_size", "precision"]


def load_checkpoint(path, keys=()):
    """The dict train.py saved in `path`, checked to hold the model, the config and `keys`."""
    if not os.path.isfile(path):
        raise UserError(f"{path} is a folder; pass the model.pt inside it" if os.path.isdir(path) else
                              f"{path} does not exist; pass the model.pt that train.py wrote")
    try:
        # weights_only=True, said explicitly: a checkpoint is tensors, numbers and strings, and
        # loading one must never run pickled code (torch before 2.6 does unless told not to).
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is not a readable checkpoint (truncated or another kind of "
                              f"file?): {reason}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise UserError(f"{path} is a torch file but not a checkpoint of train.py "
                              f"(it needs 'model' and 'config' entries)")
    if ckpt.get("format") != FORMAT:
        age = "a newer" if isinstance(ckpt.get("format"), int) and ckpt["format"] > FORMAT else "an older"
        raise UserError(f"{path} was saved by {age} version of this project; retrain it, or evaluate it "
                              f"with that version")
    if any(k not in ckpt for k in keys) or any(k not in ckpt["config"] for k in CONFIG_KEYS):
        raise UserError(f"{path} is not a complete checkpoint; start over with --force")
    return ckpt


def load_model(path):
    """(model, config, history) from a model.pt of train.py."""
    ckpt = load_checkpoint(path, keys=("history",))
    config, model = ckpt["config"], ae.MODELS[ckpt["config"]["model"]](ckpt["config"]["n_components"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        detail = str(e).splitlines()[-1].strip()  # e.g. "size mismatch for encoder.7.weight: ..."
        raise UserError(f"{path} does not match a {config['model']} with K={config['n_components']}: "
                              f"{detail[:200]}") from None
    return model, config, ckpt["history"]


def load_splits(data_dir, train_size=60000):
    # MNIST's two splits on the CPU, the training split cut to the first `train_size` images
    (train_images, train_labels), test = (data.load_mnist(data_dir, train=t) for t in (True, False))
    return Splits(train_images[:train_size], train_labels[:train_size], *test)


BASELINES_VERSION = 5  # 5: the pixels' probes with few labels too


def cached_input_baselines(data_dir, splits, dataset, k):
    # The probes on the pixels depend only on the data and the fixed noise, and take minutes on a small
    # CPU: computed once per setting and kept in <data_dir>/MNIST/probe-baselines.json (delete it to
    # recompute), the key all they depend on (BASELINES_VERSION: the code). The PCA's takes seconds.
    path = os.path.join(data_dir, "MNIST", "probe-baselines.json")
    key = (f"v{BASELINES_VERSION} {dataset} train={splits.train_images.shape[0]} test={splits.test_images.shape[0]} "
           f"seeds={SEEDS['train']},{SEEDS['test']} probe={fit_probe.__defaults__} torch={torch.__version__}")
    try:
        cache = json.load(open(path))
        assert isinstance(cache, dict) and isinstance(cache.get(key, {}), dict)
    except (OSError, ValueError, AssertionError):  # no file, or not one this code wrote: start it again
        cache = {}
    inputs = (flat_inputs(splits.train_images, dataset, SEEDS["train"]), splits.train_labels,
              flat_inputs(splits.test_images, dataset, SEEDS["test"]), splits.test_labels)
    if key not in cache:
        print(f"  the probe on the pixels of the {splits.train_images.shape[0]} training inputs: computed once "
              f"(the longest step of a first run) and kept in {path}", flush=True)
        cache[key] = pixel_baselines(*inputs, dataset)
        try:
            atomic_write(path, lambda f: f.write(json.dumps(cache, indent=1).encode()))
        except OSError:
            print(f"  (could not write {path}: it will be computed again next time)", flush=True)
    return {**cache[key], "pca": pca_baseline(*inputs, k)}


# Ten colours that stay apart (matplotlib's "tab10"), one per digit.
PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], np.uint8)


def scatter_image(points, labels, size=480, key_width=60):
    """A scatter plot (H, W, 3) uint8 of 2-D points (N, 2), a 3x3 dot in PALETTE[label] each, its top-left
    pixel at column 8 + (px - min) / (max - min) * (size - 18), row size - 10 - (py - min) / (max - min) *
    (size - 18), truncated (each axis scaled to its range); a key on the right, each digit's colour."""
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


def save_loss_curve(out, history, config, width=720, height=360, left=64, margin=24):
    """loss.ppm/.png: each step's loss (light blue), its mean over a hundredth of the steps (blue), each
    epoch's test loss (orange); loss_train.npy, loss_test.npy; {"loss": its caption}. The y-axis spans
    the mean after the first twentieth of the steps and the test losses, a twentieth more each side: the
    loss v after t of n steps is at column left + t / n * (width - left - margin), row margin + (hi - v)
    / (hi - lo) * (height - 2 margin), rounded half up, the row kept inside (the first steps cut)."""
    steps, tests = np.asarray(history["step_losses"], np.float64), np.asarray(history["test_loss_history"])
    n, epochs, window = len(steps), len(tests), max(1, len(steps) // 100)
    mean = np.convolve(steps, np.ones(window))[:n] / np.minimum(np.arange(1, n + 1), window)  # of the last `window`
    shown = np.concatenate([mean[n // 20:], tests])
    pad = 0.05 * np.ptp(shown) if np.ptp(shown) > 0 else 0.05 * max(abs(shown[0]), 1.0)
    lo, hi, w, h = shown.min() - pad, shown.max() + pad, width - left - margin, height - 2 * margin
    col = lambda t: left + np.floor(np.asarray(t) / n * w + 0.5).astype(int)  # noqa: E731
    row = lambda v: np.clip(margin + np.floor((hi - np.asarray(v)) / (hi - lo) * h + 0.5).astype(int),  # noqa: E731
                            margin, margin + h)
    picture = Image.new("RGB", (width, height), (255, 255, 255))
    draw, ends = ImageDraw.Draw(picture), [int(col(e * n / epochs)) for e in range(epochs + 1)]
    for e, x in enumerate(ends):  # the x-axis: a grey line and the epoch's number at the end of each epoch
        draw.line([(x, margin), (x, margin + h)], fill=(210, 210, 210))
        draw.text((x, margin + h + 6), str(e), fill=(0, 0, 0), anchor="mt")
    for v in (lo + pad, hi - pad):  # the y-axis: its lowest and highest loss
        draw.text((left - 6, int(row(v))), f"{v:.4g}", fill=(0, 0, 0), anchor="rm")
    for values, colour in ((steps, (174, 199, 232)), (mean, (31, 119, 180))):
        draw.line(list(zip(col(np.arange(1, n + 1)).tolist(), row(values).tolist())), fill=colour)
    for x, v in zip(ends[1:], tests):
        draw.ellipse([x - 3, int(row(v)) - 3, x + 3, int(row(v)) + 3], fill=(255, 127, 14))
    save_picture(os.path.join(out, "loss"), torch.from_numpy(np.array(picture)).permute(2, 0, 1) / 255.0, grey=False)
    for name, array in (("loss_train", steps), ("loss_test", tests)):
        atomic_write(os.path.join(out, name + ".npy"), lambda f: np.save(f, array))
    caption = (f"the training loss of each of the {n} steps (light blue) and its mean over the last {window} (blue); "
               f"the test loss after each of the {epochs} epochs (orange dots)")
    if (mean > hi).any():
        caption += (f"; the y-axis leaves out the first steps: the mean is above it for {int((mean > hi).sum())} steps "
                    f"(the highest loss of a step: {steps.max():.5g})")
    if config["kl_warmup"]:  # train.kl_weight: the steps with weight < 1
        caption += (f"; in the first {int(np.ceil(config['kl_warmup'] * n))} steps the KL term's weight rises from 0 "
                    f"to 1 (the KL warm-up), so the training loss is below the -ELBO there; the test loss is the -ELBO")
    if config["noise_start"] not in (None, config["noise_std"]):  # train.noise_level
        caption += (f"; the corruption goes from sigma_n = {config['noise_start']:g} at the first step to "
                    f"{config['noise_std']:g} at the last, and the training loss with it; the test loss is at "
                    f"{config['noise_std']:g} throughout")
    return {"loss": caption}


def save_picture(path_stem, picture, grey=True):
    """Writes <stem>.pgm (grey) or <stem>.ppm, and <stem>.png, from a (3, H, W) float tensor in [0, 1]
    such as make_grid returns; both hold the same bytes (save_image's rounding: floor(255 v + 0.5))."""
    pixels = picture.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
    pixels = np.ascontiguousarray(pixels[:, :, 0] if grey else pixels)
    # binary PGM (P5, grey) or PPM (P6, colour), the simplest format: a header "P5 width height 255", the bytes
    header = b"%s\n%d %d\n255\n" % (b"P5" if grey else b"P6", pixels.shape[1], pixels.shape[0])
    atomic_write(path_stem + (".pgm" if grey else ".ppm"), lambda f: f.write(header + pixels.tobytes()))
    atomic_write(path_stem + ".png", lambda f: save_image(picture, f, format="png"))


def write_report(out, config, history, lines=None, captions=None):
    """report.md, the run on one page: the command that rebuilds it, the summary's `lines` (None: not
    evaluated), each picture of `captions` ({name: what it shows}) in their order."""
    flags = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in config.items()
                     if key != "model" and value is not None)  # None: a setting of another model's
    report = [f"# {config['model'].upper()} on {'varianceMNIST' if config['dataset'] == 'variance' else 'MNIST'}",
              "", "The run, rebuilt by:", "", f"    python train.py --model {config['model']} {flags}", "",
              f"Trained {len(history['loss_history'])} epochs in {history['train_seconds']:.1f} s.", ""]
    if lines is None:
        report += ["Not evaluated (`--no-eval`): `python evaluate.py model.pt` writes the numbers and the other "
                   "pictures.", ""]
    else:
        report += ["## The numbers, each beside what gives it meaning", "",
                   "As the run printed them; every number is in `metrics.json`.", "", "```text", *lines, "```", ""]
    report += ["## The pictures", ""] if captions else []
    for name, caption in (captions or {}).items():
        report += [f"**{name}.png**: {caption}", "", f"![{name}]({name}.png)", ""]
    atomic_write(os.path.join(out, "report.md"), lambda f: f.write("\n".join(report).encode()))


class OneLineParser(argparse.ArgumentParser):
    # argparse prints its whole usage on an error; a person needs the one line that says what was wrong
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def pick_device(name):
    """torch.device for --device: auto picks cuda, then mps, then cpu. (train.py uses it too.)"""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if name != "auto" and not available[name]:
        what = "CUDA GPU" if name == "cuda" else "Apple MPS device"
        raise UserError(f"--device {name}: no {what} is available to this torch; use --device cpu")
    return torch.device(name if name != "auto" else next(d for d in available if available[d]))


def error_line(e):
    """(line, exit status) for both commands: a UserError or DataError says what to fix (2), an OSError the file (1)."""
    if isinstance(e, (UserError, data.DataError)):
        return f"error: {e}", 2
    where = f" ({e.filename})" if e.filename else ""  # a full disk, a folder removed or not writable
    return f"error: could not read or write a file{where}: {e.strerror or e}", 1


def main(argv=None):
    p = OneLineParser(description="Evaluate a model.pt written by train.py; outputs go beside it.")
    add = p.add_argument
    add("checkpoint", help="path to a model.pt written by train.py")
    add("--data-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"),
        help="folder holding MNIST/raw (default: data/ beside this file)")
    add("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
        help="where to compute; auto picks cuda, then mps, then cpu (default: auto)")
    add("--is-images", type=int, default=IS_IMAGES, help=f"VAE: the first N test images -log p(x) is estimated on "
        f"(default: {IS_IMAGES})")
    add("--is-samples", type=int, default=IS_SAMPLES, help=f"VAE: samples of z an image for it (default: {IS_SAMPLES})")
    args = p.parse_args(argv)
    if args.is_images < 1 or args.is_samples < 1:
        p.error("--is-images and --is-samples must be positive")
    try:
        evaluate_checkpoint(args.checkpoint, args.data_dir, pick_device(args.device), args.is_images, args.is_samples)
    except KeyboardInterrupt:
        print("interrupted: the files written so far are whole; run it again to redo them all", file=sys.stderr)
        return 130
    except (UserError, data.DataError, OSError) as e:
        print(error_line(e)[0], file=sys.stderr)
        return error_line(e)[1]
    return 0


if __name__ == "__main__":
    sys.exit(main())
