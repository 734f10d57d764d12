"""Shared fixtures: where the repository and MNIST are, and how to run the real commands."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the tests import ae, data, evaluate, train as a reader would


def find_mnist():
    # MNIST_DIR if set; else the offline copy beside the checkout (../shared/data on the team's
    # machines and in CI); else data/ in the repository, where train.py downloads it by default.
    candidates = [os.environ.get("MNIST_DIR"), os.path.join(REPO, "..", "shared", "data"), os.path.join(REPO, "data")]
    for root in candidates:
        if root and os.path.exists(os.path.join(root, "MNIST", "raw", "t10k-labels-idx1-ubyte")):
            return os.path.abspath(root)
    return os.path.join(REPO, "data")  # not there yet: the first test to load it downloads it


MNIST_DIR = find_mnist()


@pytest.fixture(scope="session")
def mnist_dir():
    return MNIST_DIR


def run_script(script, *args, cwd=None, env=None, timeout=600):
    """Runs `python <script> args...` as a user would, from another folder; returns CompletedProcess."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def call_main(main, args, capsys):
    """Calls a command's main(args) in this process, with the arguments a person would type, and
    returns a CompletedProcess with its exit status and what it printed, as run_script would: the
    same code path as the script, without a new interpreter importing torch (~5 s) for each case."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse exits by itself on a bad argument
        code = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def assert_clean_error(proc, *needles, code=2):
    """A mistake of the user's: the given exit status, one line on stderr, no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}; stderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(err.splitlines()) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    for needle in needles:
        assert needle in err, f"{needle!r} not in: {err}"


def link_mnist(root):
    """A fresh MNIST folder at `root` whose four raw files are links to the real ones: evaluation
    there starts from a cold cache of input baselines (probe-baselines.json lives beside MNIST)."""
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        os.symlink(os.path.join(MNIST_DIR, "MNIST", "raw", name), os.path.join(raw, name))
    return str(root)


@pytest.fixture
def cold_mnist(tmp_path):
    return link_mnist(tmp_path / "mnist")
