"""The models and losses of ae.py, and data.py's varianceMNIST draw, against independent oracles:
closed forms, torch.distributions, numpy and Monte Carlo estimates. No data, no training."""

import math

import numpy as np
import pytest
import torch

import ae
import data


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
    loss.backward()  # every parameter gets a gradient, and not an all-zero one
    for n, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_architectures_match_the_spec():
    k = 10
    bae = ae.BottleneckAE(k)
    linear = [m for m in bae.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [
        (784, 1000), (1000, 500), (500, 250), (250, k), (k, 250), (250, 500), (500, 1000), (1000, 784)]
    # The DAE: the original implementation's layout with unpadded convolutions, the second of stride 2;
    # BatchNorm after each conv's ReLU, none on the 250 features, in the decoder after both transposed.
    dae = ae.DenoisingAE(k)
    kinds = {torch.nn.Conv2d: "conv", torch.nn.ConvTranspose2d: "convT", torch.nn.Linear: "linear",
             torch.nn.ReLU: "relu", torch.nn.BatchNorm1d: "bn", torch.nn.BatchNorm2d: "bn"}
    assert [kinds[type(m)] for m in dae.encoder if type(m) in kinds] == [
        "conv", "relu", "bn", "conv", "relu", "bn", "linear", "relu", "linear"]
    assert [kinds[type(m)] for m in dae.decoder if type(m) in kinds] == [
        "linear", "relu", "linear", "relu", "convT", "relu", "bn", "convT", "relu", "bn"]
    assert [(m.in_features, m.out_features) for m in dae.modules() if isinstance(m, torch.nn.Linear)] == [
        (1600, 250), (250, k), (k, 250), (250, 1600)]
    assert [m.stride for m in dae.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))] == [
        (1, 1), (2, 2), (2, 2), (1, 1)]
    x = torch.zeros(2, 1, 28, 28)
    assert dae(x).shape == (2, 1, 28, 28) and dae.encode(x).shape == (2, k)
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


@pytest.mark.parametrize("kl_weight", [1.0, 0.3, 0.0])  # the -ELBO, and the KL warm-up's weighted loss
def test_vae_loss_is_kl_plus_nll_with_reparameterised_sample(kl_weight):
    torch.manual_seed(2)
    model = ae.VAE(4).double()
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    torch.manual_seed(3)
    loss = ae.vae_loss(model, x) if kl_weight == 1.0 else ae.vae_loss(model, x, kl_weight)
    # redo it by hand in numpy with the same eps
    torch.manual_seed(3)
    mu_z, logvar_z = model.encode_dist(x)
    eps = torch.randn_like(mu_z)
    z = mu_z.detach().numpy() + np.exp(0.5 * logvar_z.detach().numpy()) * eps.numpy()
    mu_x, logvar_x = (t.detach().numpy() for t in model.decode(torch.as_tensor(z)))
    m, lv, xn = mu_z.detach().numpy(), logvar_z.detach().numpy(), x.numpy()
    kl = 0.5 * (m ** 2 + np.exp(lv) - 1 - lv).sum(1)
    nll = 0.5 * (logvar_x + (xn - mu_x) ** 2 / np.exp(logvar_x)).reshape(6, -1).sum(1)
    assert np.isclose(loss.item(), (kl_weight * kl + nll).mean())


def test_reparameterize_has_the_right_distribution_and_gradients():
    torch.manual_seed(4)
    mu = torch.full((200_000, 1), 1.5, requires_grad=True)
    logvar = torch.full((200_000, 1), math.log(0.25), requires_grad=True)
    z = ae.reparameterize(mu, logvar)
    assert abs(z.mean().item() - 1.5) < 0.01 and abs(z.std().item() - 0.5) < 0.01
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.ones_like(mu.grad))  # dz/dmu = 1
    # dz/dlogvar = 1/2 sigma eps = (z - mu) / 2: the gradient reaches sigma too, which is the point
    torch.testing.assert_close(logvar.grad, (z.detach() - 1.5) / 2)


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


class LinearGaussian(torch.nn.Module):
    """p(z) = N(0, I), p(x | z) = N(W z + b, s^2 I), whose log p(x) is known in closed form, with an
    encoder q(z | x) = N(A x + c, diag(exp(lv))) that is deliberately not the true posterior."""

    def __init__(self, W, b, s2, A, c, lv):
        super().__init__()
        self.W, self.b, self.s2, self.A, self.c, self.lv = W, b, s2, A, c, lv

    def encode_dist(self, x):
        return x @ self.A.T + self.c, self.lv.expand(x.shape[0], -1)

    def decode(self, z):
        mu = z @ self.W.T + self.b
        return mu, torch.full_like(mu, math.log(self.s2))


def test_importance_sampled_nll_on_a_linear_gaussian_model():
    torch.manual_seed(8)
    D, K, s2, n = 6, 2, 0.3, 2000
    W, b = torch.randn(D, K, dtype=torch.float64), torch.randn(D, dtype=torch.float64)
    # The true posterior: Sigma = (I + W^T W / s^2)^-1, mean Sigma W^T (x - b) / s^2. The encoder
    # shrinks the mean and widens the variance, so that one sample is far from enough.
    sigma = torch.linalg.inv(torch.eye(K, dtype=torch.float64) + W.T @ W / s2)
    A = 0.7 * sigma @ W.T / s2
    model = LinearGaussian(W, b, s2, A, -A @ b, torch.log(torch.diagonal(sigma)) + 0.7).eval()
    x = torch.randn(n, K, dtype=torch.float64) @ W.T + b + math.sqrt(s2) * torch.randn(n, D, dtype=torch.float64)
    # Oracle 1, log p(x) in closed form: x ~ N(b, W W^T + s^2 I); without the (D/2) log 2pi constant
    true_nll = -(torch.distributions.MultivariateNormal(b, W @ W.T + s2 * torch.eye(D, dtype=torch.float64))
                 .log_prob(x) + D / 2 * math.log(2 * math.pi))
    # Oracle 2, -ELBO in closed form: KL(q || p) + E_q[-log p(x | z)], the expectation of a quadratic
    mu, lv = model.encode_dist(x)
    resid = x - mu @ W.T - b  # (n, D)
    spread = (W.pow(2) * lv.exp()[:1]).sum(1)  # diag(W diag(sigma_q^2) W^T), (D,)
    exact_neg_elbo = ae.kl_to_standard_normal(mu, lv) + 0.5 * (math.log(s2) + (resid.pow(2) + spread) / s2).sum(1)
    gap = (exact_neg_elbo - true_nll).mean().item()
    assert gap > 0.3  # the encoder is bad enough that the bound is loose

    gen = torch.Generator().manual_seed(9)
    means = {}
    for samples in (1, 10, 100, 1000):
        nll, neg_elbo = ae.importance_sampled_nll(model, x, samples, generator=gen)
        assert nll.shape == neg_elbo.shape == (n,)
        assert torch.all(neg_elbo >= nll - 1e-9)  # Jensen: mean of log w <= log of mean of w, draw by draw
        se = (nll - true_nll).std().item() / math.sqrt(n)
        means[samples] = (nll - true_nll).mean().item()  # the estimate's excess over the truth
        # between the two oracles, up to sampling noise
        assert -4 * se < means[samples] < gap + 4 * se, (samples, means[samples], gap, se)
        # its own -ELBO, averaged over the samples, is an unbiased estimate of the exact -ELBO
        se_elbo = (neg_elbo - exact_neg_elbo).std().item() / math.sqrt(n)
        assert abs((neg_elbo - exact_neg_elbo).mean().item()) < 4 * se_elbo + 1e-9
    # one sample is the ELBO itself; more samples approach log p(x)
    assert abs(means[1] - gap) < 0.1 * gap
    assert means[1] > means[10] > means[100] > means[1000]
    assert means[1000] < 0.05 * gap


def test_noise_functions_draw_from_the_generator_they_are_given():
    # Evaluation hands ae.py and data.py a CPU generator for fixed noise; the numbers must be those
    # the formula gives with that generator's draws, written out here, and with none the global
    # generator's (training's).
    x, s = torch.randn(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    mu, logvar = torch.randn(4, 5), torch.randn(4, 5)

    def gen():
        return torch.Generator().manual_seed(3)

    noise = torch.randn(x.shape, generator=gen())
    assert torch.equal(ae.corrupt(x, 0.3, gen()), x + 0.3 * noise)
    assert torch.equal(data.variance_batch(s, gen()), s * noise)
    assert torch.equal(data.make_batch((s * 255).to(torch.uint8), "variance", gen()),
                       data.to_float((s * 255).to(torch.uint8)) * noise)
    expected = mu + torch.exp(0.5 * logvar) * torch.randn(4, 5, generator=gen())
    assert torch.equal(ae.reparameterize(mu, logvar, gen()), expected)
    torch.manual_seed(5)
    a = ae.corrupt(x, 0.3)
    torch.manual_seed(5)
    assert torch.equal(a, x + 0.3 * torch.randn_like(x))
    # the optimal mask s^2 / (s^2 + sigma_n^2); with no corruption the input itself is best
    s = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(ae.optimal_mask(s, 0.2), torch.tensor([0.0, 0.25 / 0.29, 1 / 1.04]))
    assert torch.equal(ae.optimal_mask(s, 0), torch.ones(3))


def test_neg_elbo_matches_its_closed_form_on_a_linear_gaussian_model():
    # Oracle: for q(z | x) = N(mu, diag(sigma^2)) and p(x | z) = N(A z + b, diag(v)) the -ELBO is known:
    #     KL_j = 1/2 (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)                     (each dimension j)
    #     E_q[-log p(x | z)] = 1/2 sum_i (log v_i + ((x_i - (A mu + b)_i)^2 + (A diag(sigma^2) A^T)_ii) / v_i)
    # The Monte Carlo mean of neg_elbo_terms over many draws of z must give it; decoding the mean
    # of q instead of a sample misses the trace term (A diag(sigma^2) A^T)_ii.
    gen = torch.Generator().manual_seed(0)
    B, K, D, S = 3, 2, 5, 20000
    A, b = torch.randn(D, K, generator=gen, dtype=torch.float64), torch.randn(D, generator=gen, dtype=torch.float64)
    v = torch.rand(D, generator=gen, dtype=torch.float64) + 0.2
    x = torch.randn(B, D, generator=gen, dtype=torch.float64)
    mu = torch.tensor([[0.5, -1.0], [2.0, 0.0], [-0.3, 0.7]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, -1.0], [0.5, -2.0], [1.0, 0.3]], dtype=torch.float64)

    class Affine:  # encode_dist and decode, as ae.py's models have them; q ignores x on purpose
        def encode_dist(self, x):
            return mu.repeat(x.shape[0] // B, 1), logvar.repeat(x.shape[0] // B, 1)

        def decode(self, z):
            mean = z @ A.T + b
            return mean, v.log().expand_as(mean)

    kl, nll = ae.neg_elbo_terms(Affine(), x.repeat(S, 1), torch.Generator().manual_seed(1))  # S draws of each image
    assert kl.shape == (S * B, K) and nll.shape == (S * B, D)
    exact_kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)  # (B, K)
    torch.testing.assert_close(kl[:B], exact_kl)
    trace = (A.pow(2)[None] * logvar.exp()[:, None, :]).sum(2)  # (B, D): (A diag(sigma^2) A^T)_ii
    exact_nll = 0.5 * (v.log() + ((x - mu @ A.T - b).pow(2) + trace) / v).sum(1)  # (B,)
    draws = nll.sum(1).view(S, B)  # -log p(x | z) of each draw
    mc, se = draws.mean(0), draws.std(0) / math.sqrt(S)
    assert torch.all((mc - exact_nll).abs() < 4 * se), (mc, exact_nll, se)
    assert torch.all(0.5 * (trace / v).sum(1) > 20 * se)  # the trace term is far above the noise
    # vae_loss is the same -ELBO, averaged over the batch, from the global generator's draws
    torch.manual_seed(2)
    loss = ae.vae_loss(Affine(), x.repeat(S, 1))
    exact = (exact_kl.sum(1) + exact_nll).mean()
    assert abs(loss.item() - exact.item()) < 4 * (se.pow(2).sum().sqrt() / B).item(), (loss, exact)
