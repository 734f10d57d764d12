"""The probe, PCA, picture writers and atomic saves of evaluate.py, against numpy, PIL and toy
problems with known answers."""

import copy
import io
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image  # comes with torchvision; an independent reader of PGM, PPM and PNG

import ae
import evaluate


def test_few_label_probes_fit_on_n_labelled_codes_only():
    # Oracle: the subsets drawn here from the labels' seed, the probe fitted on each, the mean of the
    # test accuracies. On a toy problem whose classes overlap, 20 labels read out less than 200, and
    # sizes not below the number of training codes are left out.
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (600,), generator=gen)
    codes = torch.randn(600, 4, generator=gen, dtype=torch.float64) + 0.6 * torch.randn(10, 4, generator=gen,
                                                                                        dtype=torch.float64)[labels]
    train, test, y, yt = codes[:500], codes[500:], labels[:500], labels[500:]
    result = evaluate.few_label_probes(train, y, test, yt, sizes=(20, 200, 500), repeats=3)
    draw = torch.Generator().manual_seed(evaluate.SEEDS["labels"])
    for n in (20, 200):
        picks = [torch.randperm(500, generator=draw)[:n] for _ in range(3)]
        assert result[str(n)] == pytest.approx(np.mean([evaluate.accuracy(evaluate.fit_probe(train[i], y[i]), test, yt)
                                                        for i in picks]), rel=1e-12)
    assert set(result) == {"20", "200"} and result["20"] < result["200"]


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) + rng.standard_normal(6)
    mean, comps = evaluate.pca(torch.as_tensor(X), 3)
    Xc = X - X.mean(0)
    _, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    assert np.allclose(mean.numpy(), X.mean(0))
    for i in range(3):  # the same directions, up to the sign of each
        assert np.isclose(abs(comps[i].numpy() @ Vt[i]), 1.0)
    # the projected variances are the squared singular values / (N - 1)
    proj = (torch.as_tensor(X) - mean) @ comps.T
    assert np.allclose(proj.var(0).numpy(), S[:3] ** 2 / (len(X) - 1))
    # the sign convention: the largest entry of each component is positive
    assert all(c[c.abs().argmax()] > 0 for c in comps)


def test_probe_on_toy_problems():
    torch.manual_seed(0)
    # ten well separated clusters: a linear classifier must get them all
    centres = torch.randn(10, 5) * 10
    labels = torch.arange(10).repeat_interleave(200)
    codes = centres[labels] + torch.randn(2000, 5)
    predict = evaluate.fit_probe(codes, labels)
    assert evaluate.accuracy(predict, codes, labels) == 1.0
    test_labels = torch.arange(10).repeat_interleave(50)
    assert evaluate.accuracy(predict, centres[test_labels] + torch.randn(500, 5), test_labels) == 1.0
    # labels that the codes say nothing about: held-out accuracy near chance
    noise_labels = torch.randint(0, 10, (2000,))
    predict = evaluate.fit_probe(torch.randn(2000, 5), noise_labels)
    assert evaluate.accuracy(predict, torch.randn(2000, 5), torch.randint(0, 10, (2000,))) < 0.16
    # and it agrees with a plain numpy logistic regression on a 2-class problem that is not separable
    x = torch.randn(1000, 2, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] + torch.randn(1000, dtype=torch.float64) > 0).long()
    pred = evaluate.fit_probe(x, y, n_classes=2, l2=0.0)(x).numpy()
    w, xn, yn = np.zeros(3), np.c_[x.numpy(), np.ones(1000)], y.numpy()
    for _ in range(2000):  # gradient descent on the mean log-loss
        w -= 1.0 * xn.T @ (1 / (1 + np.exp(-xn @ w)) - yn) / 1000
    assert (pred == (xn @ w > 0)).mean() > 0.995


def test_probe_standardises_with_the_training_statistics():
    torch.manual_seed(3)
    centres = torch.randn(10, 4, dtype=torch.float64) * 2
    labels = torch.arange(10).repeat_interleave(100)
    codes = centres[labels] + torch.randn(1000, 4, dtype=torch.float64)
    test_labels = torch.randint(0, 10, (500,))
    test_codes = centres[test_labels] + torch.randn(500, 4, dtype=torch.float64)
    predict = evaluate.fit_probe(codes, labels)
    # Each dimension rescaled and shifted, by factors up to 1e6 apart: standardisation undoes it
    # exactly, so the probe predicts the same labels (without it, L-BFGS and the L2 penalty would
    # see another problem).
    scale = torch.tensor([1e-3, 1.0, 1e3, 5e2], dtype=torch.float64)
    shift = torch.tensor([100.0, -3.0, 0.0, 1e4], dtype=torch.float64)
    rescaled = evaluate.fit_probe(codes * scale + shift, labels)
    assert torch.equal(rescaled(test_codes * scale + shift), predict(test_codes))
    # the statistics are the training codes': one test code alone is classified as in a batch
    alone = torch.cat([predict(test_codes[i:i + 1]) for i in range(20)])
    assert torch.equal(alone, predict(test_codes[:20]))
    assert evaluate.accuracy(predict, test_codes, test_labels) > 0.5


def test_input_baselines_see_the_digit_only_in_the_squares():
    # A small varianceMNIST-like problem: class c has standard deviation 1 in pixels 10c..10c+9 and
    # 0.5 elsewhere, the mean is 0 everywhere. A linear readout of x is near chance; of x^2 it is
    # good. A 10-dim PCA fitted on the training inputs, projected as in numpy, gives what the
    # function says.
    gen = torch.Generator().manual_seed(4)

    def draw(n):
        y = torch.randint(0, 10, (n,), generator=gen)
        s = torch.full((n, 100), 0.5)
        s[torch.arange(n)[:, None], (10 * y)[:, None] + torch.arange(10)] = 1.0
        return s * torch.randn(n, 100, generator=gen), y

    x, y = draw(3000)
    xt, yt = draw(1000)
    result = {**evaluate.pixel_baselines(x, y, xt, yt, "variance"), "pca": evaluate.pca_baseline(x, y, xt, yt, 10)}
    assert set(result) == {"pixels", "pixels_squared", "pca", "pixels_few_labels", "pixels_squared_few_labels"}
    assert result["pixels"] < 0.3 and result["pixels_squared"] > 0.8
    # each is the probe on exactly those features, train and test alike
    assert result["pixels"] == evaluate.probe_accuracy(x, y, xt, yt, torch.float32)
    assert result["pixels_squared"] == evaluate.probe_accuracy(x * x, y, xt * xt, yt, torch.float32)
    for name, f in (("pixels", lambda a: a), ("pixels_squared", torch.square)):  # with 100 and 1000 labels too
        assert result[name + "_few_labels"] == evaluate.few_label_probes(f(x), y, f(xt), yt, torch.float32)
    xn = x.double().numpy()
    _, _, vt = np.linalg.svd(xn - xn.mean(0), full_matrices=False)
    project = lambda a: torch.as_tensor((a.double().numpy() - xn.mean(0)) @ vt[:10].T)
    assert abs(result["pca"] - evaluate.probe_accuracy(project(x), y, project(xt), yt)) <= 2 / 1000
    assert set(evaluate.pixel_baselines(x, y, xt, yt, "mnist")) == {"pixels", "pixels_few_labels"}


def test_pictures_are_written_as_pgm_ppm_and_png_with_the_same_bytes(tmp_path):
    # Oracle: Pillow reads the files back; save_image's rounding is floor(255 v + 0.5).
    torch.manual_seed(1)
    rows = [torch.rand(4, 1, 28, 28) for _ in range(3)]
    picture = evaluate.grid(rows)  # 3 rows of 4 digits, 2-pixel white borders
    evaluate.save_picture(str(tmp_path / "g"), picture)
    grey = np.asarray(Image.open(tmp_path / "g.pgm"))
    assert (tmp_path / "g.pgm").read_bytes().startswith(b"P5\n122 92\n255\n") and grey.shape == (92, 122)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "g.png"))[:, :, 0], grey)
    # the digit in row r, column c has its top-left pixel at (2 + 30 r, 2 + 30 c)
    for r, c in [(0, 0), (1, 3), (2, 1)]:
        expected = np.floor(rows[r][c, 0].numpy() * 255 + 0.5)
        assert np.array_equal(grey[2 + 30 * r: 30 + 30 * r, 2 + 30 * c: 30 + 30 * c], expected), (r, c)
    assert np.all(grey[:2] == 255) and np.all(grey[:, 30:32] == 255)  # the borders
    colour = torch.rand(3, 9, 11)
    evaluate.save_picture(str(tmp_path / "c"), colour, grey=False)
    assert (tmp_path / "c.ppm").read_bytes().startswith(b"P6\n11 9\n255\n")
    expected = np.floor(colour.permute(1, 2, 0).numpy() * 255 + 0.5)
    for path in ("c.ppm", "c.png"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / path)), expected), path


def test_signed_images_map_zero_to_mid_grey():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
    assert evaluate.to_unit(x, signed=True).tolist() == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert evaluate.to_unit(x).tolist() == [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0]


def test_scatter_image_draws_every_point_in_its_digits_colour():
    # Oracle: the mapping stated in scatter_image's docstring, for points at known places.
    size = 480
    points = np.array([[float(d), float((d * 7) % 10)] for d in range(10)])  # x 0..9, y a permutation
    labels = np.array([3, 1, 4, 0, 5, 9, 2, 6, 8, 7])  # every digit once, not in the points' order
    img = evaluate.scatter_image(points, labels, size=size)
    assert img.shape == (size, size + 60, 3) and img.dtype == np.uint8
    for (px, py), label in zip(points, labels):
        col = int(8 + px / 9 * (size - 18))
        row = int(size - 10 - py / 9 * (size - 18))
        dot = img[row:row + 3, col:col + 3].reshape(-1, 3)
        assert (dot == evaluate.PALETTE[label]).all(), (px, py, label)
    plot = img[:, :size].reshape(-1, 3)
    for d in range(10):
        assert (plot == evaluate.PALETTE[d]).all(1).sum() == 9  # one 3x3 dot each, nothing else
    key = img[:, size:].reshape(-1, 3)
    for d in range(10):  # a 15x15 swatch of each colour in the key
        assert (key == evaluate.PALETTE[d]).all(1).sum() == 15 * 15


def test_loss_curve_draws_each_step_and_epoch_where_its_docstring_says(tmp_path):
    # Oracle: the mapping in save_loss_curve's docstring, redone in numpy for a known history of 3
    # epochs of 200 steps whose first steps are far higher; the arrays saved beside it are the history.
    n, per_epoch, width, height, left, margin = 600, 200, 720, 360, 64, 24
    t = np.arange(1, n + 1)
    steps = 2 + np.cos(t / 40) + 0.3 * (t % 7 == 0)
    steps[:10] = 500.0  # the VAE's kind of start: far above the rest
    tests = [2.5, 1.2, 1.9]
    config = {"kl_warmup": 0.0, "noise_start": None, "noise_std": 0.2}
    caption = evaluate.save_loss_curve(str(tmp_path), {"step_losses": steps.tolist(), "test_loss_history": tests},
                                       config)["loss"]
    img = np.asarray(Image.open(tmp_path / "loss.ppm"))
    assert img.shape == (height, width, 3) and np.array_equal(np.asarray(Image.open(tmp_path / "loss.png")), img)
    assert np.array_equal(np.load(tmp_path / "loss_train.npy"), steps) and np.load(tmp_path / "loss_test.npy").tolist() == tests
    window = 6  # 1% of the steps
    mean = np.array([steps[max(0, i - window + 1): i + 1].mean() for i in range(n)])
    shown = np.r_[mean[n // 20:], tests]  # the first 5% left out of the axis
    lo, hi = shown.min() - 0.05 * np.ptp(shown), shown.max() + 0.05 * np.ptp(shown)

    def pixel(t, v):
        col = left + np.floor(np.asarray(t) / n * (width - left - margin) + 0.5).astype(int)
        row = margin + np.floor((hi - np.asarray(v)) / (hi - lo) * (height - 2 * margin) + 0.5).astype(int)
        return col, np.clip(row, margin, height - margin)

    blue, orange = np.array([31, 119, 180]), np.array([255, 127, 14])
    cols, rows = pixel(t, mean)
    dots = [pixel(e * per_epoch, v) for e, v in enumerate(tests, start=1)]
    for c, r in dots:
        assert (img[r, c] == orange).all(), (c, r)
    drawn = 0
    for c, r in zip(cols, rows):  # every step's mean, except where an epoch's dot covers it
        if all(abs(c - dc) > 3 or abs(r - dr) > 3 for dc, dr in dots):
            assert (img[r, c] == blue).all(), (c, r)
            drawn += 1
    assert drawn > n - 30 and rows[0] == margin  # the first steps, cut at the top edge
    # and nothing blue anywhere else: each blue pixel lies on a segment between two steps' points
    for r, c in np.argwhere((img == blue).all(2)):
        near = np.nonzero((np.minimum(cols[:-1], cols[1:]) <= c) & (c <= np.maximum(cols[:-1], cols[1:])))[0]
        assert any(min(rows[i], rows[i + 1]) <= r <= max(rows[i], rows[i + 1]) for i in near), (r, c)
    # the caption names what is drawn and the steps the axis leaves out (the mean above hi)
    assert f"the test loss after each of the 3 epochs" in caption
    assert f"the mean is above it for {int((mean > hi).sum())} steps" in caption and "500" in caption


def splits_of(test_images):
    # evaluation's splits with these test images (the quality numbers read the test split alone)
    return evaluate.Splits(None, None, test_images, None)


class ConstantMask(torch.nn.Module):
    """A "DAE" whose mask is the constant k: for constant images, k = s^2 / (s^2 + sigma_n^2) is
    the optimal denoiser itself."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x_noisy):
        return x_noisy * self.k


def test_dae_oracle_on_constant_images():
    images = torch.full((2000, 1, 28, 28), 128, dtype=torch.uint8)
    s2, sigma2 = (128 / 255) ** 2, 0.2 ** 2
    config = {"noise_std": 0.2, "dataset": "variance"}
    m = evaluate.dae_quality(ConstantMask(s2 / (s2 + sigma2)), config, splits_of(images), "cpu")
    assert m["mse_over_oracle"] == pytest.approx(1.0, abs=1e-5)  # the same draws, the same denoiser
    # closed form: E[(k x~ - x)^2] = s^2 sigma_n^2 / (s^2 + sigma_n^2); 1.6M pixels, se ~0.1%
    assert m["oracle_mse"] == pytest.approx(s2 * sigma2 / (s2 + sigma2), rel=0.01)
    worse = evaluate.dae_quality(ConstantMask(1.0), config, splits_of(images), "cpu")  # no denoising
    assert worse["mse_over_oracle"] == pytest.approx(sigma2 / (s2 * sigma2 / (s2 + sigma2)), rel=0.01)


def test_vae_oracle_nll_on_constant_images():
    # The true model's expected NLL, 1/2 sum_i (log v_i + s_i^2 / v_i) with v = max(s^2, e^-6),
    # in closed form for images whose pixels all have the same s.
    def closed(s):
        v = max(s * s, math.exp(-6))
        return 784 * 0.5 * (math.log(v) + s * s / v)

    for value in (0, 2, 128, 255):  # 2/255: below the floor; 0: the floor alone
        s = torch.full((3, 1, 28, 28), value / 255)
        assert evaluate.oracle_nll(s, -6.0).tolist() == pytest.approx([closed(value / 255)] * 3, rel=1e-6)
    images = torch.cat([torch.full((10, 1, 28, 28), 128, dtype=torch.uint8), torch.zeros(10, 1, 28, 28, dtype=torch.uint8)])
    torch.manual_seed(0)
    model = ae.VAE(3).eval()
    config = {"dataset": "variance"}
    m = evaluate.vae_quality(model, config, splits_of(images), "cpu", is_images=10, is_samples=3)
    assert m["oracle_nll"] == pytest.approx((closed(128 / 255) + closed(0)) / 2, rel=1e-6)
    assert m["subset_oracle_nll"] == pytest.approx(closed(128 / 255), rel=1e-6)  # the first 10 images
    assert m["subset_size"] == 10 and m["is_samples"] == 3
    assert m["subset_neg_elbo"] >= m["test_nll_is"]
    assert m["test_neg_elbo"] == pytest.approx(m["test_kl"] + m["test_nll"])


def test_atomic_write_never_leaves_half_a_file(tmp_path):
    path = str(tmp_path / "metrics.json")
    evaluate.atomic_write(path, lambda f: f.write(b"good"))

    def fails_halfway(f):
        f.write(b"half of a new fi")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        evaluate.atomic_write(path, fails_halfway)
    assert open(path, "rb").read() == b"good"
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temporary file left behind


def test_load_checkpoint_refuses_what_is_not_one(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(evaluate.UserError, match="not a readable checkpoint"):
        evaluate.load_checkpoint(str(tmp_path / "notes.txt"))
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(evaluate.UserError, match="not a checkpoint of train.py"):
        evaluate.load_checkpoint(str(tmp_path / "other.pt"))
    with pytest.raises(evaluate.UserError, match="does not exist"):
        evaluate.load_checkpoint(str(tmp_path / "missing.pt"))
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.randn(1000)}, "config": {}}, buf)
    (tmp_path / "cut.pt").write_bytes(buf.getvalue()[:2000])
    with pytest.raises(evaluate.UserError, match="not a readable checkpoint"):
        evaluate.load_checkpoint(str(tmp_path / "cut.pt"))


class RunsCode:
    def __reduce__(self):  # unpickling this calls os.system: what a malicious checkpoint does
        return (os.system, ("touch ran-pickled-code",))


def test_load_checkpoint_never_runs_pickled_code(tmp_path, monkeypatch):
    torch.save({"model": {}, "config": {}, "payload": RunsCode()}, tmp_path / "evil.pt")
    monkeypatch.chdir(tmp_path)
    # torch before 2.6 loaded pickled code unless weights_only=True was passed; this environment
    # variable gives today's torch that old default, so only an explicit weights_only=True refuses
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(evaluate.UserError, match="not a readable checkpoint"):
        evaluate.load_checkpoint(str(tmp_path / "evil.pt"))
    assert not (tmp_path / "ran-pickled-code").exists()


def test_adapt_batchnorm_sets_the_statistics_of_the_given_batches():
    torch.manual_seed(0)
    model = ae.DenoisingAE(4).eval()
    model.decoder[-1].running_var.fill_(3.0)  # the mask's BatchNorm, which encoding never runs, keeps its statistics
    weights = {k: v.clone() for k, v in model.state_dict().items()
               if not (k.startswith("encoder") and ("running" in k or "num_batches" in k))}
    batches = [torch.randn(50, 1, 28, 28) * s for s in (0.5, 1.0, 2.0)]  # three different scales
    evaluate.adapt_batchnorm(model, batches)
    # Oracle: the first BatchNorm sees the first convolution's output after its ReLU; numpy averages
    # its per-batch channel means and (unbiased) variances.
    conv, norm = model.encoder[0], model.encoder[2]
    assert isinstance(norm, torch.nn.BatchNorm2d)
    with torch.no_grad():
        feats = [torch.relu(conv(x)).permute(1, 0, 2, 3).reshape(6, -1).double().numpy() for x in batches]
    np.testing.assert_allclose(norm.running_mean.numpy(), np.mean([f.mean(1) for f in feats], 0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(norm.running_var.numpy(), np.mean([f.var(1, ddof=1) for f in feats], 0), rtol=1e-4)
    # Every BatchNorm moved away from its initial (0, 1); nothing else changed; mode and momentum are back.
    for m in model.encoder.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            assert not torch.allclose(m.running_var, torch.ones_like(m.running_var)) and m.momentum == 0.1
    for k, v in model.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k
    assert torch.all(model.decoder[-1].running_var == 3.0)
    assert not model.training


def test_input_baselines_fit_the_pca_on_the_training_inputs():
    # The label is in pixel 0 alone. In the training inputs pixel 0 also has the largest variance;
    # in the test inputs pixel 1 has a far larger one, unrelated to the label. A 1-dim PCA fitted on
    # the training inputs keeps pixel 0 and reads the label; one fitted on the test inputs would
    # keep pixel 1 and be at chance.
    gen = torch.Generator().manual_seed(0)

    def draw(n, loud_pixel_1):
        y = torch.randint(0, 2, (n,), generator=gen)
        x = 0.1 * torch.randn(n, 5, generator=gen)
        x[:, 0] += 3.0 * (2 * y - 1)  # the label, +-3
        if loud_pixel_1:
            x[:, 1] *= 300.0  # std 30: the largest variance, and no information
        return x, y

    x, y = draw(2000, loud_pixel_1=False)
    xt, yt = draw(2000, loud_pixel_1=True)
    assert evaluate.pca_baseline(x, y, xt, yt, 1) > 0.99


def test_interpolation_rows_decode_the_line_between_each_pair():
    # Oracle: the decoded codes (1 - t) z_a + t z_b, t = 0, 1/9, ..., 1, for the pairs (0, 1), (2, 3),
    # ..., computed here one by one, with each pair's digits at the two ends of its row.
    torch.manual_seed(0)
    model = ae.BottleneckAE(3).eval()
    s = torch.rand(10, 1, 28, 28)
    config = {"model": "bae", "dataset": "mnist", "noise_std": 0.2}
    rows, caption = evaluate.interpolation_rows(model, config, s, s, evaluate.EVALUATION["bae"])
    assert len(rows) == 5 and caption.startswith("each row: a test digit, the decoded images of 10 codes")
    with torch.no_grad():
        z = model.encode(s)
        for r in range(5):
            a, b = 2 * r, 2 * r + 1
            assert rows[r].shape == (12, 1, 28, 28)
            assert torch.equal(rows[r][0], s[a]) and torch.equal(rows[r][11], s[b])
            for i in range(10):
                t = i / 9
                expected = model.decoder(((1 - t) * z[a] + t * z[b])[None]).clamp(0, 1)[0]
                torch.testing.assert_close(rows[r][1 + i], expected, rtol=0, atol=1e-5)


def test_dae_interpolation_encodes_corrupted_inputs():
    # The DAE's decoder learned from codes of corrupted inputs, so its interpolation encodes
    # x~ = x + sigma_n n with the noise of its own seed, SEEDS["interpolation"]; its rows are masks.
    torch.manual_seed(0)
    model = ae.DenoisingAE(3).eval()
    s = torch.rand(10, 1, 28, 28)
    x = s * torch.randn(10, 1, 28, 28)
    config = {"model": "dae", "dataset": "variance", "noise_std": 0.5}
    rows, caption = evaluate.interpolation_rows(model, config, s, x, evaluate.EVALUATION["dae"])
    assert "decoded masks" in caption and "(codes of corrupted inputs)" in caption
    x_noisy = x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(evaluate.SEEDS["interpolation"]))
    with torch.no_grad():
        z = model.encode(x_noisy)
        torch.testing.assert_close(rows[0][1], torch.sigmoid(model.decoder(z[:1]))[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(rows[4][10], torch.sigmoid(model.decoder(z[9:10]))[0], rtol=0, atol=1e-6)


def test_traversal_rows_move_one_dimension_each_in_order_of_kl():
    # Oracle: row r decodes mu + c e_d, c = -3, -2.25, ..., 3, for the dimension d with the r-th
    # largest KL, computed here one row at a time.
    torch.manual_seed(0)
    model = ae.VAE(4).eval()
    x = torch.rand(10, 1, 28, 28) * torch.randn(10, 1, 28, 28)
    kl = [0.5, 7.0, 0.0, 2.0]  # order: 1, 3, 0, 2
    rows, _ = evaluate.traversal_rows(model, {"model": "vae", "dataset": "variance"}, x, {"kl_per_dimension": kl}, "cpu")
    assert len(rows) == 4
    with torch.no_grad():
        mu = model.encode(x[:1])[0]
        for r, d in enumerate([1, 3, 0, 2]):
            for i, c in enumerate(np.linspace(-3, 3, 9)):
                z = mu.clone()
                z[d] += float(c)
                expected = torch.exp(0.5 * model.decode(z[None])[1]).clamp(0, 1)[0]
                torch.testing.assert_close(rows[r][i], expected, rtol=0, atol=1e-5)


def test_knn_readout_matches_brute_force():
    # Oracle: numpy's distances between standardised codes, sorted; the majority label of the 10
    # nearest, a tie going to the smaller label.
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (600,), generator=gen)
    codes = torch.randn(600, 3, generator=gen) * torch.tensor([1.0, 10.0, 0.1]) + labels[:, None] * 0.3
    train, test, ytrain, ytest = codes[:500], codes[500:], labels[:500], labels[500:]
    a = train.double().numpy()
    mean, std = a.mean(0), a.std(0, ddof=1)
    dist = (((test.double().numpy() - mean) / std)[:, None, :] - ((a - mean) / std)[None]) ** 2
    order = np.argsort(dist.sum(2), axis=1, kind="stable")
    assert np.array_equal(evaluate.nearest_training_codes(train, test, 10, chunk=30).numpy(), order[:, :10])
    votes = np.array([np.bincount(ytrain.numpy()[row[:10]], minlength=10) for row in order])
    expected = (votes.argmax(1) == ytest.numpy()).mean()
    assert evaluate.knn_accuracy(train, ytrain, test, ytest) == expected
    assert 0.2 < expected < 0.95  # a case where neighbours help, but not trivially
    # fewer training codes than neighbours (a run with --train-size 3): all of them vote
    few = evaluate.nearest_training_codes(train[:3], test, 10)
    assert few.shape == (100, 3) and sorted(few[0].tolist()) == [0, 1, 2]
    majority = np.bincount(ytrain[:3].numpy(), minlength=10).argmax()
    assert evaluate.knn_accuracy(train[:3], ytrain[:3], test, ytest) == (ytest.numpy() == majority).mean()


class FixedVAE(torch.nn.Module):
    # q(z | x) = N(mu, exp(logvar)) and p(x | z) = N(0, exp(c)) whatever x and z: the KL and the
    # likelihood in closed form.
    def __init__(self, mu, logvar, c):
        super().__init__()
        self.mu, self.logvar, self.c = torch.tensor(mu), torch.tensor(logvar), c
        self.register_buffer("min_logvar", torch.tensor(-6.0))

    def encode_dist(self, x):
        return self.mu.expand(x.shape[0], -1), self.logvar.expand(x.shape[0], -1)

    def decode(self, z):
        return torch.zeros(z.shape[0], 1, 28, 28), torch.full((z.shape[0], 1, 28, 28), self.c)


def test_vae_kl_per_dimension_and_the_gap_split_in_closed_form():
    images = torch.zeros(20, 1, 28, 28, dtype=torch.uint8)
    images[:, :, :14] = 128  # the top half is stroke (s = 128/255), the bottom half background (s = 0)
    mu, logvar, c = [0.0, 1.0, -2.0], [0.0, -1.0, 0.5], -1.0
    model = FixedVAE(mu, logvar, c).eval()
    m = evaluate.vae_quality(model, {"dataset": "variance"}, splits_of(images), "cpu", is_samples=2)
    kl = [0.5 * (u * u + math.exp(v) - 1 - v) for u, v in zip(mu, logvar)]
    assert m["kl_per_dimension"] == pytest.approx(kl, rel=1e-6)
    gap = m["gap_to_true_model"]
    assert gap["kl"] == pytest.approx(sum(kl), rel=1e-6) == m["test_kl"]
    # background: x = 0, so -log p(x | z) = c / 2 per pixel against the true model's -6 / 2
    assert gap["background_pixels"] == pytest.approx(392 * 0.5 * (c + 6), rel=1e-6)
    # strokes: 1/2 (c + x^2 e^-c) on the evaluation's draw of x, against the true model's expected
    # 1/2 (log s^2 + 1) per pixel (oracle_nll is an expectation, as the headline gap is)
    x = next(evaluate.fixed_inputs(images, "variance", "cpu", evaluate.SEEDS["test"]))[1][:, :, :14].double()
    strokes = 0.5 * (c + x ** 2 * math.exp(-c)) - 0.5 * (math.log((128 / 255) ** 2) + 1)
    assert gap["stroke_pixels"] == pytest.approx(strokes.sum().item() / 20, rel=1e-5)
    # the three add up to the whole gap
    assert sum(gap.values()) == pytest.approx(m["test_neg_elbo"] - m["oracle_nll"], rel=1e-6)  # float32 sums


def test_dae_excess_split_on_strokes_and_background():
    # A constant mask k on images half stroke (s = 128/255), half background (s = 0). On the
    # background x = 0 and the optimal mask is 0, so the excess is the mean of (k n)^2 over those
    # pixels: k^2 sigma_n^2 per pixel, half the pixels. The two parts add up to the whole excess.
    images = torch.zeros(2000, 1, 28, 28, dtype=torch.uint8)
    images[:, :, :14] = 128
    k, sigma2 = 0.7, 0.2 ** 2
    m = evaluate.dae_quality(ConstantMask(k), {"noise_std": 0.2, "dataset": "variance"}, splits_of(images), "cpu")
    split = m["excess_mse"]
    assert split["background_pixels"] == pytest.approx(0.5 * k * k * sigma2, rel=0.01)
    # strokes: E[(k x~ - x)^2] - E[(m* x~ - x)^2] = (k - m*)^2 (s^2 + sigma_n^2), m* = s^2 / (s^2 + sigma_n^2)
    s2 = (128 / 255) ** 2
    assert split["stroke_pixels"] == pytest.approx(0.5 * (k - s2 / (s2 + sigma2)) ** 2 * (s2 + sigma2), rel=0.02)
    assert sum(split.values()) == pytest.approx(m["test_mse"] - m["oracle_mse"], rel=1e-6)  # float32 sums


def test_active_units_counts_dimensions_whose_mean_varies():
    # Burda et al.'s test: a dimension is active when the variance of its posterior mean over the
    # images exceeds 0.01. Standard deviations 0.05, 0.08, 0.2, 1 and 0 give variances 0.0025,
    # 0.0064, 0.04, 1, 0: two are active.
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 5, generator=gen)
    z = (z - z.mean(0)) / z.std(0) * torch.tensor([0.05, 0.08, 0.2, 1.0, 0.0]) + 3.0
    assert evaluate.active_units(z) == 2
    assert evaluate.active_units(z, threshold=0.005) == 3


def test_adapted_copy_leaves_out_a_last_batch_of_one():
    # --train-size 1001: chunks of 1000 and 1. The VAE's BatchNorm1d cannot take a batch of one in
    # train mode, so the single image is left out of the statistics instead of crashing.
    torch.manual_seed(0)
    images = (torch.rand(1001, 1, 28, 28) * 255).to(torch.uint8)
    model = ae.VAE(3).eval()
    adapted = evaluate.adapted_copy(model, images, "variance", "cpu")  # a copy each time
    reference = evaluate.adapted_copy(model, images[:1000], "variance", "cpu")
    for a, b in zip(adapted.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)


def test_knn_readout_takes_ten_neighbours_and_gives_a_tie_to_the_smaller_digit():
    # One-dimensional codes 1, 2, ..., 11 with labels chosen so that the 9 nearest to 0 vote 2 (five
    # to four), the 10 nearest tie five to five (so 1, the smaller digit), the 11 nearest vote 2 again.
    codes = torch.arange(1.0, 12.0)[:, None]
    labels = torch.tensor([2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2])
    assert evaluate.knn_accuracy(codes, labels, torch.zeros(1, 1), torch.tensor([1])) == 1.0


def test_adapted_copy_takes_its_statistics_from_clean_training_inputs():
    # Oracle: adapt_batchnorm on the training inputs drawn here by hand, with the training seed, in
    # the evaluation's chunks of 1000 (the images past the first 10000 are not used)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (1500, 1, 28, 28), generator=gen, dtype=torch.uint8)
    torch.manual_seed(0)
    model = ae.DenoisingAE(3).eval()
    noise = torch.Generator().manual_seed(evaluate.SEEDS["train"])
    s = images.float() / 255
    batches = [part * torch.randn(part.shape, generator=noise) for part in s.split(1000)]
    expected = evaluate.adapt_batchnorm(copy.deepcopy(model), batches).state_dict()
    adapted = evaluate.adapted_copy(model, images, "variance", "cpu").state_dict()
    assert all(torch.equal(adapted[k], expected[k]) for k in expected)
    assert not torch.equal(adapted["encoder.2.running_var"], model.state_dict()["encoder.2.running_var"])


def test_likelihood_estimate_draws_from_its_own_seed():
    # Oracle: ae.importance_sampled_nll on the test seed's draw of the images, with a generator
    # seeded SEEDS["likelihood"] made here; whatever else evaluation drew before does not matter.
    torch.manual_seed(0)
    model = ae.VAE(3).eval()
    images = torch.randint(0, 256, (30, 1, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    s = images.float() / 255
    x = s * torch.randn(s.shape, generator=torch.Generator().manual_seed(evaluate.SEEDS["test"]))
    gen = torch.Generator().manual_seed(evaluate.SEEDS["likelihood"])
    nlp, nelbo = ae.importance_sampled_nll(model, x, 4, generator=gen)
    neg_log_p, neg_elbo, oracle = evaluate.likelihood_estimate(model, images, "variance", "cpu", 4)
    assert neg_log_p == pytest.approx(nlp.mean().item(), rel=1e-6)
    assert neg_elbo == pytest.approx(nelbo.mean().item(), rel=1e-6)
    assert oracle == pytest.approx(evaluate.oracle_nll(s, -6.0).mean().item(), rel=1e-6)


def test_the_validation_probe_is_fitted_on_the_first_five_sixths_and_read_on_the_last_sixth():
    # 60 codes: on the first 50 the digit (0 or 1) is the sign of the code; on the last 10 the sign
    # is flipped. A probe fitted on the first 50 reads every one of the last 10 wrongly; one fitted
    # with the last 10 among its data, or read on the first 10, reads some of them rightly.
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 2
    sign = (2 * labels - 1).double()
    sign[50:] *= -1
    size = 1 + torch.rand(60, generator=gen, dtype=torch.float64)
    codes = torch.stack([sign * size, torch.zeros(60, dtype=torch.float64)], 1)  # (60, 2)
    assert evaluate.probe_validation_accuracy(codes, labels) == 0.0
    assert evaluate.probe_accuracy(codes[10:], labels[10:], codes[:10], labels[:10]) == 1.0  # the wrong end


def test_a_checkpoint_of_another_format_gets_one_line(tmp_path):
    # model.pt and resume.pt carry the format version train.py wrote them in; one without it (an
    # older version of this project) or with another is refused, saying what to do
    good = {"format": evaluate.FORMAT, "model": {}, "config": {k: 0 for k in evaluate.CONFIG_KEYS}, "history": {}}
    torch.save(good, tmp_path / "good.pt")
    assert evaluate.load_checkpoint(str(tmp_path / "good.pt"), keys=("history",))["format"] == evaluate.FORMAT
    for name, ckpt, age in [("old.pt", {k: v for k, v in good.items() if k != "format"}, "an older"),
                            ("older.pt", {**good, "format": evaluate.FORMAT - 1}, "an older"),
                            ("newer.pt", {**good, "format": evaluate.FORMAT + 1}, "a newer")]:
        torch.save(ckpt, tmp_path / name)
        with pytest.raises(evaluate.UserError, match=f"saved by {age} version of this project; retrain it"):
            evaluate.load_checkpoint(str(tmp_path / name))


def test_the_loss_curves_caption_says_when_the_daes_corruption_moves(tmp_path):
    # the training loss of a DAE whose corruption falls lies above its test loss: the caption says why
    config = {"model": "dae", "dataset": "variance", "noise_start": 0.4, "noise_std": 0.2, "kl_warmup": 0.0}
    history = {"step_losses": list(np.linspace(0.05, 0.01, 200)), "test_loss_history": [0.02, 0.01]}
    caption = evaluate.save_loss_curve(str(tmp_path), history, config)["loss"]
    assert "from sigma_n = 0.4 at the first step to 0.2 at the last" in caption and "at 0.2 throughout" in caption
    for same in ({**config, "noise_start": 0.2}, {**config, "noise_start": None}):
        assert "sigma_n" not in evaluate.save_loss_curve(str(tmp_path), history, same)["loss"]
