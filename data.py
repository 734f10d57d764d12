"""MNIST and varianceMNIST, as tensors for fast training and as a torchvision Dataset for reading.

    python data.py --data-dir data      # check the files and print a few statistics

varianceMNIST (from the original implementation this project grew from): every pixel is its MNIST
intensity s in [0, 1] times fresh standard normal noise, x = s * e, e ~ N(0, 1), drawn anew every
time the image is read. The mean image is 0 everywhere; the digit lives only in the variances,
Var[x] = s^2. The data set is infinite (new noise every read) but holds only as many shapes as MNIST
has digits.

Two ways to get the same distribution:
- `variance_mnist_dataset`, a torchvision Dataset with a `transforms.Lambda` that multiplies by noise, one
  image at a time; the way the original implementation did it, and the way to plug varianceMNIST into a DataLoader;
- `load_mnist` + `variance_batch`, which the training loop uses: the whole split as one uint8
  tensor on the training device, and noise drawn for a whole batch at once. Both draw x = s * e with
  e a fresh N(0, 1) for every pixel of every read, so both give the same distribution; the second is
  many times faster because it skips the per-image PIL and Python work.

Needs torch and torchvision only. MNIST is read through `torchvision.datasets.MNIST(root,
download=True)`, which downloads it into `root` when it is missing and there is a network.
"""

import os
import sys

import torch
from torchvision import datasets, transforms


def to_float(images_uint8):
    # MNIST intensities s in [0, 1]: the clean images of MNIST, and the standard deviations of
    # the pixels of varianceMNIST.
    return images_uint8.float() / 255.0


def variance_batch(s, generator=None):
    # varianceMNIST: x = s * e, e ~ N(0, 1) fresh for every pixel, so x ~ N(0, s^2) pixel by pixel.
    # Training draws e from torch's global generator on s's device, a new draw at every read.
    # Evaluation passes a CPU torch.Generator for one fixed draw, the same numbers on every device.
    if generator is None:
        e = torch.randn_like(s)
    else:
        e = torch.randn(s.shape, generator=generator, dtype=s.dtype).to(s.device)
    return s * e


def make_batch(images_uint8, dataset, generator=None):
    """The model's input for a batch of MNIST images: their intensities, or a varianceMNIST draw."""
    s = to_float(images_uint8)
    if dataset == "mnist":
        return s
    if dataset == "variance":
        return variance_batch(s, generator)
    raise ValueError(f"unknown dataset {dataset!r}: use 'mnist' or 'variance'")


def load_mnist(root, train, device="cpu"):
    """One split as tensors: images (N, 1, 28, 28) uint8 and labels (N,) int64, on `device`.

    Kept as uint8 (47 MB for the training split) and turned into floats one batch at a time.
    """
    ds = mnist(root, train)  # torchvision's dataset, its files checked first (below the line)
    images = ds.data.unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
    return images.to(device), ds.targets.to(device)


def variance_mnist_dataset(root, train=True):
    """varianceMNIST as a torchvision Dataset, one image at a time (the original implementation's form).

    `transforms.ToTensor()` turns the PIL image into intensities s in [0, 1], shape (1, 28, 28);
    the Lambda multiplies them by noise drawn anew at every read, so reading the same index twice
    gives two different images with the same pixel variances. Slow (PIL and Python per image), but
    it plugs into any DataLoader: DataLoader(variance_mnist_dataset("data"), batch_size=32).
    """
    mnist(root, train)  # check (and if need be download) the files, with one-line errors
    # variance_batch works on one image as on a batch. A module-level function, not a lambda, so
    # that DataLoader workers started by "spawn" (macOS, Windows) can pickle the transform.
    noise = transforms.Lambda(variance_batch)
    return datasets.MNIST(root, train=train, download=True,
                          transform=transforms.Compose([transforms.ToTensor(), noise]))


# =================================================================================================
# The machinery. A first reading may stop here: what follows checks the MNIST files so that a
# missing or damaged one is reported in one line, and gives this file a small command.
# =================================================================================================


# The four raw files torchvision expects under <root>/MNIST/raw, with their IDX magic number
# (2051 images, 2049 labels) and the number of items each must hold.
MNIST_FILES = {
    "train-images-idx3-ubyte": (2051, 60000),
    "train-labels-idx1-ubyte": (2049, 60000),
    "t10k-images-idx3-ubyte": (2051, 10000),
    "t10k-labels-idx1-ubyte": (2049, 10000),
}


class DataError(Exception):
    """A problem with the data files that a person can fix; the message says how, in one line."""


def check_mnist_file(path, magic, count):
    # An IDX file is a big-endian header (magic number, item count, then rows and columns for
    # images) followed by one unsigned byte per pixel or label; so its exact size is known.
    header = 16 if magic == 2051 else 8
    expected = header + count * (784 if magic == 2051 else 1)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
    found_magic = int.from_bytes(head[:4], "big") if len(head) >= 4 else None
    if found_magic != magic:
        raise DataError(f"{path} is not an MNIST file (magic number {found_magic}, expected {magic}); "
                        f"delete it and run again to download it, or point --data-dir at a good copy")
    if size != expected:
        raise DataError(f"{path} is truncated or corrupt ({size} bytes, expected {expected}); "
                        f"delete it and run again to download it, or point --data-dir at a good copy")


def mnist(root, train):
    """The torchvision MNIST dataset, with its files checked first so that errors are one clear line."""
    raw = os.path.join(root, "MNIST", "raw")
    present = [name for name in MNIST_FILES if os.path.exists(os.path.join(raw, name))]
    if len(present) < len(MNIST_FILES):
        new_folders = [f for f in (raw, os.path.dirname(raw), root) if not os.path.isdir(f)]
        try:
            datasets.MNIST(root, train=train, download=True)  # fetches the missing files
        except Exception:  # no network, a proxy, a full disk: all end in the same advice
            for folder in new_folders:  # leave no empty folders behind a failed download
                try:
                    os.rmdir(folder)
                except OSError:
                    pass
            raise DataError(f"MNIST not found in {os.path.abspath(raw)} and the download failed; "
                            f"put {', '.join(MNIST_FILES)} there, or pass --data-dir DIR with "
                            f"DIR/MNIST/raw holding them") from None
    for name, (magic, count) in MNIST_FILES.items():
        check_mnist_file(os.path.join(raw, name), magic, count)
    return datasets.MNIST(root, train=train, download=True)


def main():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"),
                        help="folder holding MNIST/raw (default: data/ beside this file)")
    args = parser.parse_args()
    try:
        images, labels = load_mnist(args.data_dir, train=True)
    except DataError as e:
        sys.exit(f"error: {e}")
    s = to_float(images)
    x = variance_batch(s[:1000])
    print(f"MNIST train: {tuple(images.shape)}, pixel mean {s.mean():.4f}, std {s.std():.4f}")
    print(f"varianceMNIST, 1000 images: mean {x.mean():+.4f}, mean of x^2 {x.pow(2).mean():.4f} "
          f"(should match mean of s^2 {s[:1000].pow(2).mean():.4f})")
    print(f"label counts: {torch.bincount(labels).tolist()}")


if __name__ == "__main__":
    main()
