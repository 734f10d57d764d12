"""The three autoencoders and their losses: bottleneck (BAE), denoising (DAE), variational (VAE).

    python train.py --model bae    # MNIST, MSE loss
    python train.py --model dae    # varianceMNIST, Gaussian corruption, mask decoder
    python train.py --model vae    # varianceMNIST, KL + Gaussian negative log-likelihood

This file needs only torch, so it can be copied alone into another project. Every model maps a
batch of images of shape (B, 1, 28, 28) to a K-dimensional code with `model.encode(x)`, and every
loss is a plain function `loss(model, x) -> scalar` that the training loop calls (the DAE's takes
its corruption's noise_std too, the VAE's the KL term's weight, which train.py fills in). Models and
losses compute in the dtype of the tensors they are given.

"The original implementation" is the code this project grew from: varianceMNIST, a DAE and a VAE
with a published run of each; "its recipe" is how it trained them (Adam at 1e-3, batches of 32,
5 epochs for the DAE and 10 for the VAE), re-run in docs/data/reference-recipe.json.

Ideas and papers:
- bottleneck autoencoder: Hinton & Salakhutdinov, "Reducing the dimensionality of data with
  neural networks", Science 2006 (the 784-1000-500-250-K shape comes from there);
- denoising autoencoder: Vincent et al., "Extracting and composing robust features with denoising
  autoencoders", ICML 2008; the mask decoder is the form of the optimal denoiser of a Gaussian
  pixel, derived above `DenoisingAE`;
- variational autoencoder: Kingma & Welling, "Auto-encoding variational Bayes", ICLR 2014; its
  log-likelihood by importance sampling: Burda et al., "Importance weighted autoencoders", 2015.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# -------------------------------------------------------------------------------------------------
# Bottleneck autoencoder: 784-1000-500-250-K and back, trained to copy its input through K numbers.


class BottleneckAE(nn.Module):
    def __init__(self, n_components=10):
        super().__init__()
        self.n_components = n_components
        self.encoder = nn.Sequential(
            nn.Flatten(),  # (B, 1, 28, 28) -> (B, 784)
            nn.Linear(784, 1000), nn.ReLU(),
            nn.Linear(1000, 500), nn.ReLU(),
            nn.Linear(500, 250), nn.ReLU(),
            nn.Linear(250, n_components),  # no ReLU: the code may take any real value
        )
        self.decoder = nn.Sequential(
            nn.Linear(n_components, 250), nn.ReLU(),
            nn.Linear(250, 500), nn.ReLU(),
            nn.Linear(500, 1000), nn.ReLU(),
            nn.Linear(1000, 784),
            nn.Unflatten(1, (1, 28, 28)),  # (B, 784) -> (B, 1, 28, 28)
        )

    def encode(self, x):
        return self.encoder(x)  # (B, 1, 28, 28) -> (B, K)

    def forward(self, x):
        return self.decoder(self.encode(x))  # the reconstruction, (B, 1, 28, 28)


def bae_loss(model, x):
    # Mean squared error per pixel, in the units of the [0, 1] pixel intensities.
    return F.mse_loss(model(x), x)


# -------------------------------------------------------------------------------------------------
# Denoising autoencoder.
#
# In varianceMNIST a pixel is x = s * e with s its MNIST intensity and e ~ N(0, 1), so given s the
# pixel is x ~ N(0, s^2). We corrupt it with x~ = x + n, n ~ N(0, sigma_n^2). Both are zero-mean
# Gaussians, so (x, x~) is jointly Gaussian and the best estimate of x in squared error is linear:
#
#     E[x | x~] = Cov(x, x~) / Var(x~) * x~ = s^2 / (s^2 + sigma_n^2) * x~
#               = x~ * 1 / (1 + sigma_n^2 / s^2)
#               = x~ * sigmoid(log s^2 - log sigma_n^2)           since sigmoid(a) = 1 / (1 + e^-a)
#
# The optimal denoiser multiplies the noisy pixel by a number in (0, 1) that depends only on the
# pixel's variance: near 1 on the strokes of the digit (s^2 >> sigma_n^2), near 0 on the background.
# So the decoder outputs that mask, m = sigmoid(f), and the denoised image is x~ * m. The mask can
# only be right if the K-number code says where the strokes are, which is why the DAE learns digit
# shapes where a plain autoencoder of x does not: its K numbers cannot carry the 784 noise values
# e, so its best output is about 0 whatever the digit.
#
# The original implementation's layout (module docstring), made cheaper: 5x5 convolutions unpadded
# (it padded by 1: 28 -> 26 -> 24, 9216 features), the second of stride 2 (28 -> 24 -> 10), so 1600
# features meet the 250 units and a step takes about half the time. The decoder mirrors it;
# output_padding=1 because a stride-2 convolution takes both 23 and 24 to 10. BatchNorm rescales the
# small signed features of varianceMNIST after each conv's ReLU (not on the 250 features) and after both
# transposed convolutions, the last on the mask's logits: where its codes read out best (docs/experiments.md,
# row "the DAE's layout"). In eval mode it is a fixed affine map: an image's mask ignores its batch.


class DenoisingAE(nn.Module):
    def __init__(self, n_components=10):
        super().__init__()
        self.n_components = n_components
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.ReLU(), nn.BatchNorm2d(6),  # (B, 1, 28, 28) -> (B, 6, 24, 24)
            nn.Conv2d(6, 16, 5, stride=2), nn.ReLU(), nn.BatchNorm2d(16),  # -> (B, 16, 10, 10)
            nn.Flatten(),  # -> (B, 1600)
            nn.Linear(1600, 250), nn.ReLU(),  # -> (B, 250)
            nn.Linear(250, n_components),  # -> (B, K), the code
        )
        self.decoder = nn.Sequential(
            nn.Linear(n_components, 250), nn.ReLU(),  # (B, K) -> (B, 250)
            nn.Linear(250, 1600), nn.ReLU(),  # -> (B, 1600)
            nn.Unflatten(1, (16, 10, 10)),  # -> (B, 16, 10, 10)
            nn.ConvTranspose2d(16, 6, 5, stride=2, output_padding=1), nn.ReLU(), nn.BatchNorm2d(6),  # -> (B, 6, 24, 24)
            nn.ConvTranspose2d(6, 1, 5), nn.ReLU(), nn.BatchNorm2d(1),  # -> (B, 1, 28, 28): logits f
        )

    def encode(self, x):
        return self.encoder(x)  # (B, 1, 28, 28) -> (B, K)

    def decode(self, z):
        # the mask m = sigmoid(f(z)) of a code z (B, K): in (0, 1), shape (B, 1, 28, 28)
        return torch.sigmoid(self.decoder(z))

    def mask(self, x_noisy):
        return self.decode(self.encode(x_noisy))

    def forward(self, x_noisy):
        # g(x~) = x~ * sigmoid(f): the form of the optimal denoiser derived above
        return x_noisy * self.mask(x_noisy)


def standard_normal_like(t, generator=None):
    # N(0, 1) noise of t's shape, dtype and device. With no generator, from torch's global generator
    # on t's device (training: fresh noise every call). With a CPU torch.Generator, drawn on the CPU
    # and then moved, so that evaluation sees exactly the same numbers on every device.
    if generator is None:
        return torch.randn_like(t)
    return torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device)


def corrupt(x, noise_std, generator=None):
    # The DAE's corruption: x~ = x + n, n ~ N(0, sigma_n^2), fresh for every pixel.
    return x + noise_std * standard_normal_like(x, generator)


def optimal_mask(s, noise_std):
    # The Bayes-optimal denoiser's mask for a varianceMNIST pixel of standard deviation s (above):
    #     m* = s^2 / (s^2 + sigma_n^2),   so that   E[x | x~] = x~ * m*
    # With no corruption (sigma_n = 0) the best output is the input itself, m* = 1.
    if noise_std == 0:
        return torch.ones_like(s)
    return s.pow(2) / (s.pow(2) + noise_std ** 2)


def dae_loss(model, x, noise_std=0.2):
    # Corrupt the (varianceMNIST) input with fresh Gaussian noise and ask for the clean pixels back.
    return F.mse_loss(model(corrupt(x, noise_std)), x)


# -------------------------------------------------------------------------------------------------
# Variational autoencoder.
#
# Generative model:   p(z) = N(0, I),   p(x | z) = N(x | mu_x(z), diag(exp(logvar_x(z))))
# Approximate posterior (the encoder):   q(z | x) = N(z | mu_z(x), diag(exp(logvar_z(x))))
#
# The decoder predicts a variance for every pixel, which is exactly what varianceMNIST needs: the
# digit's shape is in the variances. But background pixels of varianceMNIST are exactly 0, and a
# Gaussian whose variance goes to 0 at a point where the data sits has a log-likelihood that goes
# to +infinity. Left alone, training pours all its effort into shrinking the background variances
# and never learns the strokes. So the predicted log-variance is floored, softly, at min_logvar:
#
#     logvar = min_logvar + softplus(logvar_raw - min_logvar)   (>= min_logvar, smooth, ~identity above)
#
# min_logvar = -6 means a smallest standard deviation of exp(-3) ~ 0.05 in [0, 1] pixel units.
#
# The VAE's encoder and decoder: the DAE's without the stride (28x28 -> 24x24 -> 20x20, 16*20*20=6400
# features), BatchNorm before each ReLU of the encoder, on the 250 features too, none in the decoder.
#
# varianceMNIST pixels are signed and small (std ~0.3) and the shape is in their squares, so the
# first layers start far from a useful scale; BatchNorm rescales them every step. Each model keeps
# the layout that reads out best for its own loss: the DAE's, trained as the VAE is, reads out
# lower (docs/experiments.md, "VAE layout"). In eval mode BatchNorm is a fixed affine map, so the
# code of a test image does not depend on the other images of its batch.


def conv_encoder_body():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.BatchNorm2d(6), nn.ReLU(),  # (B, 1, 28, 28) -> (B, 6, 24, 24)
        nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(),  # -> (B, 16, 20, 20)
        nn.Flatten(),  # -> (B, 6400)
        nn.Linear(6400, 250), nn.BatchNorm1d(250), nn.ReLU(),  # -> (B, 250)
    )


def conv_decoder_body(n_components):
    return nn.Sequential(
        nn.Linear(n_components, 250), nn.ReLU(),  # (B, K) -> (B, 250)
        nn.Linear(250, 6400), nn.ReLU(),  # -> (B, 6400)
        nn.Unflatten(1, (16, 20, 20)),  # -> (B, 16, 20, 20)
        nn.ConvTranspose2d(16, 6, 5), nn.ReLU(),  # -> (B, 6, 24, 24)
    )


class VAE(nn.Module):
    def __init__(self, n_components=10, min_logvar=-6.0):
        super().__init__()
        self.n_components = n_components
        self.encoder = conv_encoder_body()
        self.enc_mu = nn.Linear(250, n_components)  # mean of q(z | x)
        self.enc_logvar = nn.Linear(250, n_components)  # log-variance of q(z | x)
        self.decoder = conv_decoder_body(n_components)
        # The decoder's two heads, the mean and the log-variance of p(x | z), as one transposed
        # convolution with two output channels: channel 0 is the mean, channel 1 the log-variance
        # (before the floor). Each channel has its own weights and bias, so these are still two
        # separate heads, but the 6x24x24 features are read once instead of twice.
        self.dec_heads = nn.ConvTranspose2d(6, 2, 5)  # (B, 6, 24, 24) -> (B, 2, 28, 28)
        # A buffer, not a parameter: it is saved with the model and moves with .to(device), but the
        # optimizer never changes it.
        self.register_buffer("min_logvar", torch.tensor(float(min_logvar)))

    def encode_dist(self, x):
        h = self.encoder(x)  # (B, 1, 28, 28) -> (B, 250)
        return self.enc_mu(h), self.enc_logvar(h)  # two (B, K)

    def encode(self, x):
        # The code of an image is the mean of its approximate posterior.
        return self.encode_dist(x)[0]

    def decode(self, z):
        h = self.decoder(z)  # (B, K) -> (B, 6, 24, 24)
        mu, logvar = self.dec_heads(h).chunk(2, dim=1)  # (B, 2, 28, 28) -> two (B, 1, 28, 28)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)  # >= min_logvar, see above
        return mu, logvar

    def forward(self, x, generator=None):
        # the whole model on one sample of z, the steps the -ELBO takes (encode_sample_decode below)
        return encode_sample_decode(self, x, generator)


def reparameterize(mu, logvar, generator=None):
    # z = mu + sigma * eps, eps ~ N(0, I): a sample of N(mu, sigma^2) written as a differentiable
    # function of (mu, sigma), so gradients flow through the sampling (Kingma & Welling, sec. 2.4).
    # `generator`: fixed noise for evaluation (standard_normal_like); None in training.
    return mu + torch.exp(0.5 * logvar) * standard_normal_like(mu, generator)


def kl_to_standard_normal(mu, logvar, per_dimension=False):
    # KL(N(mu, sigma^2) || N(0, 1)) in closed form, summed over the latent dimensions
    # (Kingma & Welling, appendix B):
    #     KL = 1/2 * sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)  # (B, K): the KL of each dimension j
    return kl if per_dimension else kl.sum(dim=1)  # (B, K) -> (B,)


def gaussian_nll(x, mu, logvar, per_pixel=False):
    # -log N(x | mu, sigma^2) without its constant (D/2) log(2 pi), summed over the D dimensions of
    # each item of the batch (the 784 pixels of an image, or the K numbers of a code):
    #     1/2 * sum_i (log sigma_i^2 + (x_i - mu_i)^2 / sigma_i^2)
    # (the constant does not move the optimum; with it, add 784/2 * log(2 pi) ~ 720.4 nats)
    nll = 0.5 * (logvar + (x - mu).pow(2) * torch.exp(-logvar))  # x's shape: one term per pixel
    return nll if per_pixel else nll.flatten(1).sum(dim=1)  # -> (B,)


def encode_sample_decode(model, x, generator=None):
    # q(z | x) from the encoder, one sample z ~ q(z | x), p(x | z) from the decoder at that sample:
    # (mu_x, logvar_x) of x's shape, (mu_z, logvar_z) (B, K)
    mu_z, logvar_z = model.encode_dist(x)
    z = reparameterize(mu_z, logvar_z, generator)
    mu_x, logvar_x = model.decode(z)
    return mu_x, logvar_x, mu_z, logvar_z


def neg_elbo_terms(model, x, generator=None):
    """The two terms of the -ELBO of each image, from one reparameterised sample z ~ q(z | x):
    KL(q(z|x) || p(z)) of each latent dimension (B, K), and -log p(x | z) of each pixel, x's shape.
    Summed, they are the -ELBO; evaluation reads them apart (which dimensions, which pixels)."""
    mu_x, logvar_x, mu_z, logvar_z = encode_sample_decode(model, x, generator)
    return (kl_to_standard_normal(mu_z, logvar_z, per_dimension=True),
            gaussian_nll(x, mu_x, logvar_x, per_pixel=True))


def vae_loss(model, x, kl_weight=1.0):
    # Negative ELBO per image, averaged over the batch:
    #     -ELBO = KL(q(z|x) || p(z)) + E_q[-log p(x | z)]
    # with the expectation estimated by one reparameterised sample z ~ q(z | x). Training may weigh
    # the KL term by kl_weight < 1 in its first steps (a KL warm-up, train.kl_weight); at 1 it is
    # the -ELBO.
    kl, nll = neg_elbo_terms(model, x)  # (B, K), (B, 1, 28, 28)
    return (kl_weight * kl.sum(dim=1) + nll.flatten(1).sum(dim=1)).mean()


# -------------------------------------------------------------------------------------------------
# How tight is the bound? The VAE's own log-likelihood, by importance sampling.
#
# The ELBO is a lower bound on log p(x) = log E_{p(z)}[p(x | z)]. Drawing z from q(z | x) instead
# of p(z) and reweighting gives an unbiased estimate of p(x) itself (Burda, Grosse & Salakhutdinov,
# "Importance weighted autoencoders", 2015):
#
#     p(x) = E_{z ~ q(z|x)}[ p(x | z) p(z) / q(z | x) ]
#     log p(x) ~ log (1/S) sum_s w_s,    w_s = p(x | z_s) p(z_s) / q(z_s | x),   z_s ~ q(z | x)
#
# By Jensen's inequality the mean of log w_s (the ELBO, estimated with S samples) is at most the log
# of the mean of w_s, and the latter rises towards log p(x) as S grows. The weights span hundreds of
# nats, so the mean is taken in log space with logsumexp, which never forms exp(log w) directly.


@torch.no_grad()
def importance_sampled_nll(model, x, n_samples, generator=None):
    """-log p(x) and -ELBO per image (B,), from the same n_samples draws of z ~ q(z | x).

    In the units of vae_loss: nats per image, without the (D/2) log(2 pi) constant. `model` needs
    encode_dist(x) -> (mu_z, logvar_z) and decode(z) -> (mu_x, logvar_x). The noise comes from
    `generator` (a CPU torch.Generator, moved to x's device; None: the global one on x's device).
    """
    assert not model.training, "importance_sampled_nll needs model.eval(): BatchNorm must use its running statistics"
    mu_z, logvar_z = model.encode_dist(x)  # two (B, K)
    log_w = []
    for _ in range(n_samples):
        z = reparameterize(mu_z, logvar_z, generator)  # z ~ q(z | x), as in training
        mu_x, logvar_x = model.decode(z)
        # log w = log p(x | z) + log p(z) - log q(z | x); gaussian_nll drops the same constant
        # (K/2) log(2 pi) from log p(z) and log q(z | x), so it cancels in their difference.
        log_p_x_given_z = -gaussian_nll(x, mu_x, logvar_x)
        zeros = torch.zeros_like(z)  # N(0, I): mean 0, log-variance 0
        log_p_z_over_q = gaussian_nll(z, mu_z, logvar_z) - gaussian_nll(z, zeros, zeros)
        log_w.append(log_p_x_given_z + log_p_z_over_q)  # (B,)
    log_w = torch.stack(log_w)  # (S, B)
    log_p_x = torch.logsumexp(log_w, dim=0) - math.log(n_samples)  # log of the mean of w, stably
    return -log_p_x, -log_w.mean(dim=0)


# The model class for each --model name (train.py pairs each with its loss).
MODELS = {"bae": BottleneckAE, "dae": DenoisingAE, "vae": VAE}
