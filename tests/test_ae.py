"""The models and losses of ae.py against independent oracles: closed forms, torch.distributions,
numpy and Monte Carlo estimates. No data, no training."""

import math

import numpy as np
import pytest
import torch

import ae


@pytest.mark.parametrize("name", ["bae", "dae", "vae"])
@pytest.mark.parametrize("batch", [1, 7])
def test_shapes(name, batch):
    torch.manual_seed(0)
    model = ae.MODELS[name](n_components=5)
    if batch == 1:
        model.eval()  # BatchNorm cannot take batch statistics of one image; eval mode uses running ones
    x = torch.randn(batch, 1, 28, 28)
    assert model.encode(x).shape == (batch, 5)
    out = model(x)
    if name == "vae":
        mu_x, logvar_x, mu_z, logvar_z = out
        assert mu_x.shape == logvar_x.shape == (batch, 1, 28, 28)
        assert mu_z.shape == logvar_z.shape == (batch, 5)
    else:
        assert out.shape == (batch, 1, 28, 28)
    loss = {"bae": ae.bae_loss, "dae": ae.dae_loss, "vae": ae.vae_loss}[name](model, x)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()  # every parameter gets a gradient
    assert all(p.grad is not None for p in model.parameters())


def test_architectures_match_the_spec():
    k = 10
    bae = ae.BottleneckAE(k)
    linear = [m for m in bae.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [
        (784, 1000), (1000, 500), (500, 250), (250, k), (k, 250), (250, 500), (500, 1000), (1000, 784)]
    vae = ae.VAE(k)
    assert [(m.in_features, m.out_features) for m in vae.modules() if isinstance(m, torch.nn.Linear)] == [
        (6400, 250), (250, k), (250, k), (k, 250), (250, 6400)]
    convs = [(type(m).__name__, m.in_channels, m.out_channels, m.kernel_size) for m in vae.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert convs == [("Conv2d", 1, 6, (5, 5)), ("Conv2d", 6, 16, (5, 5)), ("ConvTranspose2d", 16, 6, (5, 5)),
                     ("ConvTranspose2d", 6, 2, (5, 5))]  # the two heads, as two output channels
    assert vae.min_logvar.item() == -6 and "min_logvar" in dict(vae.named_buffers())


def test_kl_matches_monte_carlo():
    # KL(q || p) = E_q[log q(z) - log p(z)], estimated with many samples of z ~ q.
    torch.manual_seed(0)
    mu = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, -2.0, 1.0], [0.5, -0.5, -3.0]], dtype=torch.float64)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(0.0, 1.0)
    z = q.sample((400_000,))  # (S, B, K)
    terms = (q.log_prob(z) - p.log_prob(z)).sum(-1)  # (S, B)
    mc, se = terms.mean(0), terms.std(0) / math.sqrt(z.shape[0])
    exact = ae.kl_to_standard_normal(mu, logvar)
    assert exact.shape == (2,)
    assert torch.all((exact - mc).abs() < 5 * se), (exact, mc, se)
    # and the closed form agrees with torch.distributions' own
    assert torch.allclose(exact, torch.distributions.kl_divergence(q, p).sum(-1))


def test_gaussian_nll_is_log_prob_without_constant():
    torch.manual_seed(1)
    x, mu = torch.randn(4, 1, 28, 28, dtype=torch.float64), torch.randn(4, 1, 28, 28, dtype=torch.float64)
    logvar = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    log_prob = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(x).flatten(1).sum(1)
    constant = 784 / 2 * math.log(2 * math.pi)
    assert torch.allclose(ae.gaussian_nll(x, mu, logvar), -log_prob - constant)


def test_vae_loss_is_kl_plus_nll_with_reparameterised_sample():
    torch.manual_seed(2)
    model = ae.VAE(4).double()
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    torch.manual_seed(3)
    loss = ae.vae_loss(model, x)
    # redo it by hand in numpy with the same eps
    torch.manual_seed(3)
    mu_z, logvar_z = model.encode_dist(x)
    eps = torch.randn_like(mu_z)
    z = mu_z.detach().numpy() + np.exp(0.5 * logvar_z.detach().numpy()) * eps.numpy()
    mu_x, logvar_x = (t.detach().numpy() for t in model.decode(torch.as_tensor(z)))
    m, lv, xn = mu_z.detach().numpy(), logvar_z.detach().numpy(), x.numpy()
    kl = 0.5 * (m ** 2 + np.exp(lv) - 1 - lv).sum(1)
    nll = 0.5 * (logvar_x + (xn - mu_x) ** 2 / np.exp(logvar_x)).reshape(6, -1).sum(1)
    assert np.isclose(loss.item(), (kl + nll).mean())


def test_reparameterize_has_the_right_distribution_and_gradients():
    torch.manual_seed(4)
    mu = torch.full((200_000, 1), 1.5, requires_grad=True)
    logvar = torch.full((200_000, 1), math.log(0.25), requires_grad=True)
    z = ae.reparameterize(mu, logvar)
    assert abs(z.mean().item() - 1.5) < 0.01 and abs(z.std().item() - 0.5) < 0.01
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.ones_like(mu.grad))  # dz/dmu = 1


def test_logvar_floor():
    model = ae.VAE(3)
    z = torch.randn(5, 3)
    with torch.no_grad():
        model.dec_heads.weight[:, 1].zero_()  # output channel 1: the log-variance head
        model.dec_heads.bias[1].fill_(-100.0)  # the raw log-variance wants to go to -100
        _, logvar = model.decode(z)
        assert torch.all(logvar >= -6.0) and torch.allclose(logvar, torch.full_like(logvar, -6.0))
        model.dec_heads.bias[1].fill_(3.0)  # well above the floor the soft floor is ~ the identity
        _, logvar = model.decode(z)
        assert torch.allclose(logvar, torch.full_like(logvar, 3.0), atol=1e-3)
        model.dec_heads.bias[1].fill_(-6.0)  # at the floor: -6 + softplus(0) = -6 + log 2
        _, logvar = model.decode(z)
        assert torch.allclose(logvar, torch.full_like(logvar, -6.0 + math.log(2)))
    model.min_logvar.fill_(-2.0)  # the floor is the buffer's value, not a constant in the code
    with torch.no_grad():
        model.dec_heads.bias[1].fill_(-100.0)
        assert torch.allclose(model.decode(z)[1], torch.full((5, 1, 28, 28), -2.0))


def test_dae_output_is_input_times_mask():
    torch.manual_seed(5)
    model = ae.DenoisingAE(4)
    x_noisy = torch.randn(3, 1, 28, 28)
    mask = model.mask(x_noisy)
    assert torch.all((mask > 0) & (mask < 1))
    assert torch.allclose(model(x_noisy), x_noisy * mask)


def test_optimal_denoiser_formula_by_monte_carlo():
    # The comment in ae.py derives E[x | x~] = x~ * s^2 / (s^2 + sigma_n^2) = x~ * sigmoid(log s^2 -
    # log sigma_n^2) for x ~ N(0, s^2), x~ = x + n. Check: the least-squares slope of x on x~ from
    # samples, and that no other multiplier does better.
    rng = np.random.default_rng(0)
    for s, sigma_n in [(1.0, 0.2), (0.3, 0.2), (0.05, 0.5)]:
        x = s * rng.standard_normal(2_000_000)
        x_noisy = x + sigma_n * rng.standard_normal(x.shape)
        slope = (x * x_noisy).sum() / (x_noisy ** 2).sum()
        optimum = s ** 2 / (s ** 2 + sigma_n ** 2)
        assert abs(slope - optimum) < 0.005
        assert np.isclose(optimum, 1 / (1 + np.exp(-(np.log(s ** 2) - np.log(sigma_n ** 2)))))
        best = ((optimum * x_noisy - x) ** 2).mean()
        for c in (optimum * 0.9, optimum * 1.1, 1.0):
            assert best <= ((c * x_noisy - x) ** 2).mean()


def test_bae_loss_is_mean_squared_error():
    torch.manual_seed(6)
    model = ae.BottleneckAE(3)
    x = torch.rand(5, 1, 28, 28)
    expected = ((model(x).detach().numpy() - x.numpy()) ** 2).mean()
    assert np.isclose(ae.bae_loss(model, x).item(), expected, rtol=1e-5)


def test_dae_loss_uses_fresh_noise_of_the_given_std():
    torch.manual_seed(7)
    model = ae.DenoisingAE(3)
    x = torch.zeros(4, 1, 28, 28)
    # with a mask of exactly 1 the output is x~ itself, so the loss is the noise's variance
    with torch.no_grad():
        last = model.decoder[-1]
        last.weight.zero_()
        last.bias.fill_(50.0)  # sigmoid(50) = 1 in float32
    losses = [ae.dae_loss(model, x, noise_std=0.3).item() for _ in range(50)]
    assert abs(np.mean(losses) - 0.09) < 0.003
    assert len(set(losses)) == 50  # a new draw every call


def test_adapt_batchnorm_sets_the_statistics_of_the_given_batches():
    torch.manual_seed(0)
    model = ae.DenoisingAE(4).eval()
    model.decoder.append(torch.nn.BatchNorm2d(1))  # a decoder BatchNorm, which encoding never runs,
    model.decoder[-1].running_var.fill_(3.0)      # must keep its statistics
    weights = {k: v.clone() for k, v in model.state_dict().items()
               if not (k.startswith("encoder") and ("running" in k or "num_batches" in k))}
    batches = [torch.randn(50, 1, 28, 28) * s for s in (0.5, 1.0, 2.0)]  # three different scales
    ae.adapt_batchnorm(model, batches)
    # Oracle: the first BatchNorm sees the first convolution's output; numpy averages its per-batch
    # channel means and (unbiased) variances.
    conv, norm = model.encoder[0][0], model.encoder[0][1]
    with torch.no_grad():
        feats = [conv(x).permute(1, 0, 2, 3).reshape(6, -1).double().numpy() for x in batches]
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
