"""Evaluate a trained autoencoder: linear probe, PCA of the codes, quality numbers and pictures.

    python evaluate.py runs/vae-variance/model.pt      # train.py runs this after training

Writes beside the checkpoint, so evaluating a saved model again reproduces its folder:
    metrics.json                        probe accuracies, reconstruction quality beside a baseline
                                        or the optimum, loss history, timings, config, versions
    codes_{train,test}.npy, labels_{train,test}.npy     the K-dim codes, to check the probe yourself
    pca_test.npy, pca_test.ppm/.png     the test codes projected to 2-D by PCA, one colour per digit
    recon.pgm/.png                      test digits and what the model makes of them, row by row
    samples.pgm/.png (VAE)              decoded samples of the prior p(z) = N(0, I)

The probe is the usual test of a representation: freeze the encoder, fit a linear classifier
(multinomial logistic regression) on the codes of the training images, report its accuracy on the
test images. If a linear map of K numbers recovers the digit, the code holds the digit's shape.
The codes are those of the data itself (MNIST or clean varianceMNIST). The DAE was trained on
corrupted inputs, so its codes come from a copy whose BatchNorm statistics are re-estimated on
clean training images first (ae.adapt_batchnorm); its denoising numbers use the model as trained.

Everything here but `evaluate_checkpoint` and `main` (which rebuild the model with ae.py and read
MNIST with data.py) needs only torch, numpy and the standard library, so the probe, the PCA and the
PGM/PPM/PNG writers can be copied out alone.
"""

import copy
import json
import os
import struct
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

# Evaluation noise comes from CPU generators with these seeds, one per use, so every device sees
# the same numbers and the training and test images never share a noise field.
SEEDS = {"train": 2024, "test": 2025, "model": 2026}  # model: DAE corruption and VAE samples

# What evaluate_checkpoint writes beside model.pt (train.py removes them when it replaces model.pt).
OUTPUTS = ["metrics.json", "codes_train.npy", "codes_test.npy", "labels_train.npy", "labels_test.npy",
           "pca_test.npy", "pca_test.ppm", "pca_test.png", "recon.pgm", "recon.png", "samples.pgm", "samples.png"]


# -------------------------------------------------------------------------------------------------
# Saving without ever leaving a half-written file.


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


def atomic_save(obj, path):
    atomic_write(path, lambda f: torch.save(obj, f))


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says why, in one line."""


def load_checkpoint(path, map_location="cpu"):
    if not os.path.exists(path):
        raise CheckpointError(f"{path} does not exist; pass the model.pt that train.py wrote")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a folder; pass the model.pt inside it")
    try:
        # weights_only: a checkpoint is tensors, numbers and strings; refuse to run pickled code.
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or another kind of "
                              f"file?): {reason}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path} is a torch file but not a checkpoint of train.py "
                              f"(it needs 'model' and 'config' entries)")
    return ckpt


# -------------------------------------------------------------------------------------------------
# The linear probe: multinomial logistic regression, fitted by L-BFGS on the full training set.


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
    # D x D eigenproblem is the same answer ~4x faster for MNIST's 60000 x 784 inputs, and in float64
    # squaring the condition number loses no precision that matters here.)
    _, V = torch.linalg.eigh(Xc.T @ Xc)  # eigenvalues ascending; the columns of V are the directions
    components = V[:, -k:].flip(1).T  # (k, D), the largest variance first
    # A direction's sign is arbitrary; fix it (largest entry positive) so results are repeatable.
    signs = torch.sign(components.gather(1, components.abs().argmax(1, keepdim=True)))  # (k, 1)
    return mean, components * signs


# -------------------------------------------------------------------------------------------------
# Pictures without a plotting library: binary PGM (grey) and PPM (colour), plus a PNG copy.


def encode_pnm(image):
    # P5 (grey) or P6 (colour): a text header, then the raw bytes, row by row, maxval 255.
    image = np.ascontiguousarray(image, dtype=np.uint8)
    magic = {2: b"P5", 3: b"P6"}[image.ndim]
    return b"%s\n%d %d\n255\n" % (magic, image.shape[1], image.shape[0]) + image.tobytes()


def decode_pnm(blob):
    # The inverse of encode_pnm, for the tests and for anyone reading the files back.
    magic, width, height, maxval = blob.split(maxsplit=4)[:4]
    header = len(b" ".join([magic, width, height, maxval])) + 1
    shape = (int(height), int(width)) + ((3,) if magic == b"P6" else ())
    return np.frombuffer(blob[header:], dtype=np.uint8).reshape(shape)


def encode_png(image):
    # A minimal PNG: signature, IHDR, one zlib-compressed IDAT of filter-0 rows, IEND.
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    colour = 0 if image.ndim == 2 else 2  # greyscale or RGB, 8 bits per sample
    # each row: a 0 (filter type "none"), then its bytes: (H, W[, 3]) -> (H, 1 + W * channels)
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, -1)], axis=1)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)) + chunk(b"IEND", b""))


def save_image(path_stem, image):
    """Writes <stem>.pgm or <stem>.ppm, and <stem>.png, from a uint8 (H, W) or (H, W, 3) array."""
    ext = ".pgm" if image.ndim == 2 else ".ppm"
    atomic_write(path_stem + ext, lambda f: f.write(encode_pnm(image)))
    atomic_write(path_stem + ".png", lambda f: f.write(encode_png(image)))


def to_uint8(images, signed=False):
    # [0, 1] -> [0, 255]; signed images (varianceMNIST pixels) map [-1, 1] -> [0, 255], mid-grey 0.
    images = images.detach().float().cpu()
    if signed:
        images = (images + 1) / 2
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def tile(rows, pad=2):
    """rows: list of uint8 arrays (n, 28, 28); returns one grey image, a row of digits per entry."""
    n, h, w = rows[0].shape
    grid = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad), 255, np.uint8)
    for r, row in enumerate(rows):
        for c in range(n):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[y:y + h, x:x + w] = row[c]
    return grid


# Ten colours that stay apart (matplotlib's "tab10"), one per digit.
PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], np.uint8)

# 3x5 pixel glyphs of the digits, for the key of the scatter plot.
GLYPHS = ["111101101101111", "010110010010111", "111001111100111", "111001111001111", "101101111001001",
          "111100111001111", "111100111101111", "111001010010010", "111101111101111", "111101111001111"]


def scatter_image(points, labels, size=480, key_width=60):
    """A colour scatter plot of 2-D points (N, 2), one colour per label 0-9, with a key on the right."""
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
    for digit in range(10):  # the key: a colour swatch and the digit drawn 3x size
        top, left = 20 + digit * 40, size + 8
        img[top:top + 15, left:left + 15] = PALETTE[digit]
        glyph = np.array([int(c) for c in GLYPHS[digit]], bool).reshape(5, 3)
        img[top:top + 15, left + 24:left + 33][np.kron(glyph, np.ones((3, 3), bool))] = 0
    return img


# -------------------------------------------------------------------------------------------------
# Evaluating a checkpoint of train.py.


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


def evaluate_checkpoint(path, data_dir, device="cpu"):
    """Everything listed in the module docstring, written beside `path`; returns the metrics."""
    import ae  # only the command needs the model and data code of this project
    import data

    device = torch.device(device)
    ckpt = load_checkpoint(path, map_location="cpu")
    config, out = ckpt["config"], os.path.dirname(os.path.abspath(path))
    needed = ["model", "dataset", "n_components", "noise_std"]
    if not isinstance(config, dict) or any(k not in config for k in needed) or config["model"] not in ae.MODELS:
        raise CheckpointError(f"{path} has no usable config (it needs {', '.join(needed)}, and a model "
                              f"among {', '.join(ae.MODELS)}); was it written by train.py?")
    model = ae.MODELS[config["model"]](config["n_components"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        detail = str(e).splitlines()[-1].strip()  # e.g. "size mismatch for encoder.7.weight: ..."
        raise CheckpointError(f"{path} does not match a {config['model']} with K={config['n_components']}: "
                              f"{detail[:200]}") from None
    model.to(device).eval()
    dataset = config["dataset"]
    train_images, train_labels = data.load_mnist(data_dir, train=True)
    test_images, test_labels = data.load_mnist(data_dir, train=False)
    gen = torch.Generator().manual_seed(SEEDS["model"])

    def randn_like(t):
        return torch.randn(t.shape, generator=gen).to(t.device)

    metrics = {}

    def codes_of(encoder):
        with torch.no_grad():
            codes_train = torch.cat([encoder.encode(x).cpu() for _, x in fixed_inputs(train_images, dataset, device, SEEDS["train"])])
            codes_test = torch.cat([encoder.encode(x).cpu() for _, x in fixed_inputs(test_images, dataset, device, SEEDS["test"])])
        return codes_train, codes_test

    # 1. Codes of every image, and the linear probe on them.
    encoder = model
    if config["model"] == "dae":
        # The DAE was trained on corrupted images and is asked for the codes of clean ones: first
        # give a copy of it the BatchNorm statistics of clean training images (see ae.adapt_batchnorm;
        # 10000 images pin them down: with all 60000, the default run's probe differs by 0.01 points).
        # The probe with the statistics of training is kept too, for comparison.
        codes_train, codes_test = codes_of(model)
        predict = fit_probe(codes_train, train_labels)
        metrics["probe_test_accuracy_unadapted"] = accuracy(predict, codes_test, test_labels)
        encoder = copy.deepcopy(model)
        ae.adapt_batchnorm(encoder, (x for _, x in fixed_inputs(train_images[:10000], dataset, device, SEEDS["train"])))
    codes_train, codes_test = codes_of(encoder)
    predict = fit_probe(codes_train, train_labels)
    metrics["probe_train_accuracy"] = accuracy(predict, codes_train, train_labels)
    metrics["probe_test_accuracy"] = accuracy(predict, codes_test, test_labels)

    # 2. PCA of the test codes to 2-D, saved as points and as a picture.
    mean, comps = pca(codes_test, 2)
    pca_test = ((codes_test.double() - mean) @ comps.T).numpy()  # (N, K) -> (N, 2)
    arrays = {"codes_train": codes_train.numpy(), "codes_test": codes_test.numpy(), "labels_train": train_labels.numpy(),
              "labels_test": test_labels.numpy(), "pca_test": pca_test}
    for name in arrays:
        atomic_write(os.path.join(out, name + ".npy"), lambda f: np.save(f, arrays[name]))
    save_image(os.path.join(out, "pca_test"), scatter_image(pca_test, test_labels.numpy()))

    # 3. Quality on the whole test set, beside a baseline or the optimum, and the pictures.
    # The picture shows the first test image of each digit 0-9, one per column.
    show = torch.stack([torch.nonzero(test_labels == d)[0, 0] for d in range(10)])
    with torch.no_grad():
        if config["model"] == "bae":
            metrics.update(bae_quality(model, config, train_images, test_images, device))
        elif config["model"] == "dae":
            metrics.update(dae_quality(model, config, test_images, device, randn_like))
        else:
            metrics.update(vae_quality(model, config, test_images, device, randn_like, ae))
        rows = picture_rows(model, config, test_images[show], device, randn_like)
        save_image(os.path.join(out, "recon"), tile(rows))
        if config["model"] == "vae":
            z = torch.randn(50, config["n_components"], generator=gen).to(device)  # z ~ p(z) = N(0, I)
            mu_x, logvar_x = model.decode(z)
            std_x = torch.exp(0.5 * logvar_x)
            draw = mu_x + std_x * randn_like(mu_x)  # x ~ p(x | z)
            rows = []
            for i in range(0, 50, 10):  # a row of predictive stds, then a row of draws from them
                rows += [to_uint8(std_x[i:i + 10, 0]), to_uint8(draw[i:i + 10, 0], signed=True)]  # (10, 28, 28) each
            save_image(os.path.join(out, "samples"), tile(rows))

    history = ckpt.get("history", {})
    metrics.update({
        "loss_history": history.get("loss_history"), "test_loss_history": history.get("test_loss_history"),
        "train_seconds": history.get("train_seconds"), "samples_per_second": history.get("samples_per_second"),
        "config": config, "device": str(device), "torch_version": torch.__version__,
    })
    atomic_write(os.path.join(out, "metrics.json"), lambda f: f.write(json.dumps(metrics, indent=2).encode()))
    summary = {k: v for k, v in metrics.items() if isinstance(v, float) and k not in ("train_seconds", "samples_per_second")}
    print("  ".join(f"{k} {v:.4f}" for k, v in summary.items()))
    print(f"wrote metrics.json, codes, PCA and pictures to {out}")
    return metrics


def bae_quality(model, config, train_images, test_images, device):
    # Reconstruction MSE in [0, 1] pixel units, beside PCA with the same K: the best any *linear*
    # K-dimensional code can do, and the baseline the nonlinear autoencoder has to beat.
    k, dataset = config["n_components"], config["dataset"]
    sq, pca_sq, n = 0.0, 0.0, test_images.shape[0] * 784
    train_x = torch.cat([x.flatten(1) for _, x in fixed_inputs(train_images, dataset, "cpu", SEEDS["train"])])
    mean, comps = pca(train_x, k)  # fitted on the training inputs: (784,), (K, 784)
    for _, x in fixed_inputs(test_images, dataset, device, SEEDS["test"]):
        sq += (model(x) - x).pow(2).sum().item()
        xf = x.cpu().flatten(1).double()  # (B, 1, 28, 28) -> (B, 784)
        recon = (xf - mean) @ comps.T @ comps + mean  # project onto the K directions and back
        pca_sq += (recon - xf).pow(2).sum().item()
    return {"test_mse": sq / n, "pca_test_mse": pca_sq / n}


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


def vae_quality(model, config, test_images, device, randn_like, ae):
    # Negative ELBO per test image (nats, without the 784/2 log 2pi constant), one fixed sample of
    # z per image, beside the expected negative log-likelihood of the true generative model of
    # varianceMNIST with the same variance floor, pixel variance v = max(s^2, exp(min_logvar)):
    #     E_x[-log N(x | 0, v)] = 1/2 * sum_i (log v_i + s_i^2 / v_i)      (since E[x_i^2] = s_i^2)
    # No model with this floor can beat it on average, so the gap is what the VAE still misses.
    min_logvar = model.min_logvar.item()
    kl = nll = oracle = 0.0
    for s, x in fixed_inputs(test_images, config["dataset"], device, SEEDS["test"]):
        mu_z, logvar_z = model.encode_dist(x)
        z = mu_z + torch.exp(0.5 * logvar_z) * randn_like(mu_z)  # z = mu + sigma * eps
        mu_x, logvar_x = model.decode(z)
        kl += ae.kl_to_standard_normal(mu_z, logvar_z).sum().item()
        nll += ae.gaussian_nll(x, mu_x, logvar_x).sum().item()
        v = s.pow(2).clamp_min(np.exp(min_logvar))
        oracle += 0.5 * (v.log() + s.pow(2) / v).sum().item()
    n = test_images.shape[0]
    metrics = {"test_neg_elbo": (kl + nll) / n, "test_kl": kl / n, "test_nll": nll / n}
    if config["dataset"] == "variance":
        metrics["oracle_nll"] = oracle / n
    return metrics


def picture_rows(model, config, images_uint8, device, randn_like):
    """Rows of 10 test digits for recon.pgm, top to bottom as listed in the comments."""
    s, x = next(fixed_inputs(images_uint8, config["dataset"], device, SEEDS["test"]))  # (10, 1, 28, 28)
    signed = config["dataset"] == "variance"
    rows = [to_uint8(s[:, 0])]  # the MNIST digits; [:, 0]: (10, 1, 28, 28) -> (10, 28, 28)
    if signed:
        rows.append(to_uint8(x[:, 0], signed=True))  # the varianceMNIST input
    if config["model"] == "bae":
        rows.append(to_uint8(model(x)[:, 0], signed))  # reconstruction
    elif config["model"] == "dae":
        x_noisy = x + config["noise_std"] * randn_like(x)
        mask = model.mask(x_noisy)
        rows += [to_uint8(x_noisy[:, 0], signed), to_uint8((x_noisy * mask)[:, 0], signed),  # x~, x~ * m
                 to_uint8(mask[:, 0])]  # the mask m
        if signed and config["noise_std"] > 0:  # the optimal mask s^2 / (s^2 + sigma_n^2)
            rows.append(to_uint8((s.pow(2) / (s.pow(2) + config["noise_std"] ** 2))[:, 0]))
    else:
        mu_z, logvar_z = model.encode_dist(x)
        mu_x, logvar_x = model.decode(mu_z)  # the decoder at the posterior mean
        std_x = torch.exp(0.5 * logvar_x)
        rows += [to_uint8(mu_x[:, 0], signed), to_uint8(std_x[:, 0]),  # predictive mean and std
                 to_uint8((mu_x + std_x * randn_like(mu_x))[:, 0], signed)]  # a draw from p(x | z)
    return rows


def main(argv=None):
    import argparse

    class OneLineParser(argparse.ArgumentParser):
        def error(self, message):
            self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    here = os.path.dirname(os.path.abspath(__file__))
    p = OneLineParser(description="Evaluate a model.pt written by train.py; outputs go beside it.")
    p.add_argument("checkpoint", help="path to a model.pt written by train.py")
    p.add_argument("--data-dir", default=os.path.join(here, "data"),
                   help="folder holding MNIST/raw (default: data/ beside this file)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where to compute; auto picks cuda, then mps, then cpu (default: auto)")
    args = p.parse_args(argv)
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
        evaluate_checkpoint(args.checkpoint, args.data_dir, device)
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
