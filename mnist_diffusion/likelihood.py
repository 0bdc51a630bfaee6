# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""
The DDPM as a likelihood model: its variational bound in bits per dimension. The pipeline's `log_likelihood` is a thin
front over [`log_likelihood`]; the class that makes a digit most probable (the zero-shot classifier, `pipe.classify`) is in
`zero_shot.py`, on this module's coefficients.

Notation is the scheduler's: timesteps are 0-based, so the model call at timestep t maps x_t to x_{t−1}, its noise
level is ᾱ_t = `alphas_cumprod[t]`, and timestep 0 is the decoder step onto the data (Ho et al.'s x_1 → x_0). The bound
of Ho et al. (2020), eq. (5), for a digit x and label y is then

    L = L_prior + Σ_{t=1}^{T−1} L_t + L_decoder
    L_prior   = KL(q(x_{T−1} | x) ‖ N(0, I))
    L_t       = E_q KL(q(x_{t−1} | x_t, x) ‖ p_θ(x_{t−1} | x_t, y))        (Gaussians; eq. 6–7 for q)
    L_decoder = −E_q log p_θ(x | x_0, y)                               (discretised Gaussian over 256 levels, §3.3)

in nats, reported in bits per dimension: L / (784 · ln 2), on the pixels scaled to [−1, 1] as the model sees them.
p_θ's mean is the scheduler's μ̃_t(x_t, x̂_0) with x̂_0 from the model's prediction (clipped to [−1, 1] when the
scheduler clips, as its `step` does), its variance σ_t² the scheduler's `variance_type` (β̃_t or β_t); the decoder's
variance is β̃ at timestep 1 for both types, as in Ho et al.'s code (β̃ at timestep 0 is zero).
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils import BaseOutput, logging

from .images import IMAGE_SIZE, digits_to_pixel_levels, pixel_levels_to_model_range
from .pipeline_mnist_ddpm_checks import (check_generators, check_labels, check_positive_integer, null_class_label,
                                         num_class_labels)

logger = logging.get_logger(__name__)

NUM_PIXEL_LEVELS = 256
NUM_DIMENSIONS = IMAGE_SIZE * IMAGE_SIZE
# How `variational_bound` estimates from drawn timesteps; part of the key of every cached estimate, so that a result of
# an earlier form (independent draws, one decoder draw) is never read as one of this form.
ESTIMATOR = "stratified timesteps, decoder averaged over K // 4 draws"


@dataclass
class VariationalBoundOutput(BaseOutput):
    """
    Output of [`variational_bound`] (and `MNISTDDPMPipeline.log_likelihood`), one value per image, in bits per
    dimension.

    Args:
        bits_per_dim (`torch.Tensor` of shape `(batch_size,)`): an unbiased estimate of the bound L / (784 · ln 2),
            itself an upper bound on −log₂ p_θ(x) per pixel: its mean over the draws is the bound, and one draw may
            fall below it. With every term computed only the draw of each term's x_t is random (the estimate of
            least variance); with timesteps drawn, their choice is too.
        prior_bits_per_dim (`torch.Tensor`): L_prior's share (exact).
        diffusion_bits_per_dim (`torch.Tensor`): the share of Σ L_t, t = 1 … T−1 (all terms, or their estimate).
        decoder_bits_per_dim (`torch.Tensor`): L_decoder's share (one draw of x_0, or the mean of several).
        log_likelihood (`torch.Tensor`): −L in nats, a lower bound on log p_θ(x) (of the 8-bit digit), or its
            estimate.
        terms_bits_per_dim (`torch.Tensor` of shape `(batch_size, T)`, *optional*): with every term computed,
            L_decoder (column 0) and each L_t (column t), in bits per dimension.
    """

    bits_per_dim: torch.Tensor
    prior_bits_per_dim: torch.Tensor
    diffusion_bits_per_dim: torch.Tensor
    decoder_bits_per_dim: torch.Tensor
    log_likelihood: torch.Tensor
    terms_bits_per_dim: torch.Tensor | None = None


def gaussian_kl(mean_1: torch.Tensor, variance_1, mean_2: torch.Tensor, variance_2) -> torch.Tensor:
    """
    KL(N(mean_1, variance_1) ‖ N(mean_2, variance_2)) per element, in nats:
    ½ (log(σ₂²/σ₁²) + (σ₁² + (μ₁ − μ₂)²) / σ₂² − 1).
    """
    variance_1, variance_2 = torch.as_tensor(variance_1), torch.as_tensor(variance_2)
    return 0.5 * (torch.log(variance_2 / variance_1) + (variance_1 + (mean_1 - mean_2) ** 2) / variance_2 - 1)


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, std) -> torch.Tensor:
    """
    log P(x) per pixel, in nats, where x (in [−1, 1], on the 256 bin centres k/127.5 − 1) is N(mean, std²) rounded
    to its bin of width 2/255, the outermost bins reaching to ±∞ (Ho et al., 2020, eq. 13). Computed from the
    tail on the side away from the mean, so that a bin far from the mean keeps its (tiny) probability.
    """
    std = torch.as_tensor(std, dtype=torch.float64)
    x, mean = x.double(), mean.double()
    half_bin = 1.0 / (NUM_PIXEL_LEVELS - 1)
    upper = torch.where(x >= 1 - 1e-6, torch.full_like(x, math.inf), (x + half_bin - mean) / std)
    lower = torch.where(x <= -1 + 1e-6, torch.full_like(x, -math.inf), (x - half_bin - mean) / std)
    # P = Φ(upper) − Φ(lower); when the bin lies above the mean, the same mass is Φ(−lower) − Φ(−upper).
    flip = lower > 0
    upper, lower = torch.where(flip, -lower, upper), torch.where(flip, -upper, lower)
    log_upper, log_lower = torch.special.log_ndtr(upper), torch.special.log_ndtr(lower)
    return log_upper + torch.log1p(-torch.exp(log_lower - log_upper).clamp(max=1 - 1e-15))


class BoundCoefficients:
    """
    The scheduler's coefficients of every timestep that the bound needs, float64: ᾱ_t, the posterior's x̂_0 and x_t
    coefficients of μ̃_t (eq. 7) and variance β̃_t, and the model's variance σ_t².
    """

    def __init__(self, scheduler):
        config = scheduler.config
        # A distilled student samples with a consistency scheduler (LCMScheduler, TCDScheduler), whose `step` applies
        # the boundary condition c_skip·x_t + c_out·x̂_0: its network is a consistency function, not the DDPM's noise
        # predictor, and defines no bound.
        if hasattr(scheduler, "get_scalings_for_boundary_condition_discrete"):
            raise ValueError(
                f"The bound and the zero-shot classifier need a DDPM's noise predictor and its scheduler; this one "
                f"samples with a {type(scheduler).__name__}, a consistency model's (a distilled student): use the "
                "teacher it was distilled from."
            )
        variance_type = config.get("variance_type", "fixed_small")
        if variance_type not in ("fixed_small", "fixed_large"):
            raise ValueError(f"The bound needs a fixed variance_type ('fixed_small' or 'fixed_large'), got "
                             f"{variance_type!r}.")
        self.num_train_timesteps = config.num_train_timesteps
        self.prediction_type = config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"The bound reads the model's output as 'epsilon', 'sample' or 'v_prediction', got "
                             f"prediction_type {self.prediction_type!r}.")
        # Dynamic thresholding replaces the clipping of x̂_0 by a per-image rescaling, and a zero terminal SNR makes
        # x̂_0 from ε infinite at the last timestep: neither is the model this bound describes.
        for key in ("thresholding", "rescale_betas_zero_snr"):
            if config.get(key, False):
                raise ValueError(f"The bound is defined for schedulers without {key}; this one has {key}=True.")
        self.clip_range = config.get("clip_sample_range", 1.0) if config.get("clip_sample", False) else None
        betas = scheduler.betas.double()
        alphas = 1 - betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.x0_coefficient = alphas_cumprod_prev.sqrt() * betas / (1 - self.alphas_cumprod)
        self.xt_coefficient = alphas.sqrt() * (1 - alphas_cumprod_prev) / (1 - self.alphas_cumprod)
        self.posterior_variance = (1 - alphas_cumprod_prev) / (1 - self.alphas_cumprod) * betas  # β̃_t; β̃_0 = 0
        model_variance = (self.posterior_variance if variance_type == "fixed_small" else betas).clone()
        model_variance[0] = self.posterior_variance[1]  # the decoder's variance
        self.model_variance = model_variance

    def epsilon_weights(self) -> torch.Tensor:
        """
        The bound's weight of the squared ε-error at each timestep: with x̂_0 unclipped, L_t = w_t · ‖ε − ε_θ‖²
        + (a term without θ), w_t = x̂_0-coefficient² · (1 − ᾱ_t)/ᾱ_t / (2σ_t²) (Ho et al., eq. 12).
        """
        alphas_cumprod = self.alphas_cumprod
        return self.x0_coefficient**2 * (1 - alphas_cumprod) / alphas_cumprod / (2 * self.model_variance)

    def predicted_original(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x̂_0 from the model's output, as the scheduler's `step` computes it (clipped when it clips)."""
        sqrt_alpha_prod = _per_image(self.alphas_cumprod[t].sqrt(), x_t)
        sqrt_beta_prod = _per_image((1 - self.alphas_cumprod[t]).sqrt(), x_t)
        if self.prediction_type == "epsilon":
            x0 = (x_t - sqrt_beta_prod * model_output) / sqrt_alpha_prod
        elif self.prediction_type == "sample":
            x0 = model_output
        else:  # v_prediction (the only other type __init__ lets through)
            x0 = sqrt_alpha_prod * x_t - sqrt_beta_prod * model_output
        return x0 if self.clip_range is None else x0.clamp(-self.clip_range, self.clip_range)

    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """μ̃_t(x_t, x_0) = x̂_0-coefficient · x_0 + x_t-coefficient · x_t (eq. 7)."""
        return _per_image(self.x0_coefficient[t], x_t) * x0 + _per_image(self.xt_coefficient[t], x_t) * x_t

    def prior_term(self, x: torch.Tensor) -> torch.Tensor:
        """L_prior per image, nats: KL(N(√ᾱ x, (1 − ᾱ) I) ‖ N(0, I)) at the last timestep."""
        alpha_prod = self.alphas_cumprod[-1]
        return gaussian_kl(alpha_prod.sqrt() * x.double(), 1 - alpha_prod, torch.zeros((), dtype=torch.float64),
                           torch.ones((), dtype=torch.float64)).flatten(1).sum(1)

    def term(self, x: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, model_output: torch.Tensor) -> torch.Tensor:
        """
        The bound's term of each (image, timestep) pair, nats: L_t for t ≥ 1, L_decoder for t = 0, given x_t and the
        model's output at (x_t, t). `t` may live on the CPU whatever the images' device (the tables are on the CPU).
        """
        x, x_t = x.double(), x_t.double()
        model_mean = self.posterior_mean(self.predicted_original(model_output.double(), x_t, t), x_t, t)
        model_variance = _per_image(self.model_variance[t], x_t)
        decoder = (t == 0).to(x_t.device)
        kl = gaussian_kl(self.posterior_mean(x, x_t, t), _per_image(self.posterior_variance[t].clamp(min=1e-30), x_t),
                         model_mean, model_variance).flatten(1).sum(1)
        nll = -discretized_gaussian_log_likelihood(x, model_mean, model_variance.sqrt()).flatten(1).sum(1)
        return torch.where(decoder, nll, kl)


def _per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device, like.dtype).reshape((-1,) + (1,) * (like.ndim - 1))


def model_prediction(unet, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # A bfloat16 UNet sees x_t rounded to bfloat16: that rounding is part of the model whose bound is computed.
    dtype = unet.dtype
    return unet(x_t.to(dtype), t, labels).sample.float()


def standard_normal(shape: tuple, generator: torch.Generator | None) -> torch.Tensor:
    """
    Standard normal noise of `shape` on the CPU, drawn where `generator` lives (as diffusers' `randn_tensor` does), one
    row (`shape[1:]`) at a time: a generator's stream depends on the size of each draw (on CUDA; on the CPU for sizes
    that are not multiples of 16), so rows drawn in pieces of any size are then the rows drawn at once.
    """
    device = generator.device if generator is not None else "cpu"
    return torch.stack([torch.randn(shape[1:], generator=generator, device=device) for _ in range(shape[0])]).cpu()


def _rand(count: int, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform numbers in [0, 1) on the CPU, float64, drawn where `generator` lives."""
    device = generator.device if generator is not None else "cpu"
    return torch.rand(count, generator=generator, device=device, dtype=torch.float64).cpu()


def _check_unet_labels(unet, labels) -> torch.Tensor:
    """`labels` as a long tensor, each a digit of `unet` or its null label; otherwise a `ValueError` naming it."""
    if getattr(unet, "config", None) is None:
        return torch.as_tensor(labels).long().reshape(-1)
    # The null label (one past the digits) is allowed: it gives the unconditional model's bound.
    return torch.tensor(check_labels(labels, num_class_labels(unet) + 1), dtype=torch.long)


def check_proposal(proposal, num_train_timesteps: int) -> torch.Tensor:
    """
    `proposal` as float64 probabilities of timesteps 1 … T−1 (entry 0, the decoder's, set to 0), normalised; a
    `ValueError` names a wrong shape, or a timestep it would never draw (a zero or NaN), which the estimate would miss.
    """
    proposal = torch.as_tensor(proposal, dtype=torch.float64, device="cpu").clone()
    if proposal.shape != (num_train_timesteps,):
        raise ValueError(f"`proposal` must hold {num_train_timesteps} probabilities (timesteps 0 … "
                         f"{num_train_timesteps - 1}), got shape {tuple(proposal.shape)}.")
    bad = (~torch.isfinite(proposal[1:]) | (proposal[1:] <= 0)).nonzero()
    if len(bad):
        index = bad[0].item() + 1
        raise ValueError(f"`proposal` must be finite and positive at every timestep 1 … {num_train_timesteps - 1} "
                         f"(else the estimate misses terms), got {proposal[index].item()!r} at timestep {index}.")
    proposal[0] = 0
    return proposal / proposal.sum()


def decoder_draws(num_timesteps: int) -> int:
    """
    The draws of x_0 the decoder term is averaged over in an estimate from `num_timesteps` timesteps: a quarter as
    many. The decoder is half the bound and varies with its draw about as much as the 16-draw estimate of the rest
    (0.036 against 0.033 bits/dim on the shipped model), so one draw would double the estimate's variance.
    """
    return max(1, num_timesteps // 4)


def stratified_timesteps(proposal: torch.Tensor, num_timesteps: int, generator) -> torch.Tensor:
    """
    K timesteps from `proposal` (probabilities of timesteps 0 … T−1 with entry 0 zero, as [`check_proposal`] makes
    them), one from each of K equal slices of its cumulative distribution: t_k = F⁻¹((k + u_k)/K), u_k uniform. Each
    t_k is drawn from the proposal restricted to its slice, and the K slices together are the proposal, so
    (1/K) Σ_k L_{t_k} / p(t_k) is unbiased for Σ_t L_t; the slices spread the draws as the proposal's mass is
    (stratified sampling: lower variance than K independent draws).
    """
    cumulative = proposal.cumsum(0)
    fractions = (torch.arange(num_timesteps, dtype=torch.float64) + _rand(num_timesteps, generator)) / num_timesteps
    drawn = torch.searchsorted(cumulative, fractions * cumulative[-1], right=True)
    return drawn.clamp(1, len(proposal) - 1)


def image_rows(num_timesteps: int | None, proposal: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The timesteps of one image's rows in [`variational_bound`] and their weights: every term once (`num_timesteps`
    None), or the decoder's [`decoder_draws`] then the [`stratified_timesteps`], each weighted so that the weighted
    sums are the estimates.
    """
    if num_timesteps is None:
        return torch.arange(len(proposal)), torch.ones(len(proposal), dtype=torch.float64)
    decoder = decoder_draws(num_timesteps)
    drawn = stratified_timesteps(proposal, num_timesteps, generator)
    return (torch.cat([torch.zeros(decoder, dtype=torch.long), drawn]),
            torch.cat([torch.full((decoder,), 1 / decoder, dtype=torch.float64), 1 / (num_timesteps * proposal[drawn])]))


@torch.no_grad()
def variational_bound(unet, scheduler, images, labels: torch.Tensor, num_timesteps: int | None = None,
                      proposal: torch.Tensor | None = None, generator: torch.Generator | list | None = None,
                      batch_size: int = 500) -> VariationalBoundOutput:
    """
    The variational bound of each digit under the model, in bits per dimension.

    Args:
        unet: the noise predictor, called as `unet(x_t, t, labels).sample`.
        scheduler: the [`MNISTDDPMScheduler`] (or a diffusers scheduler with `betas` and the same config keys)
            whose forward process and reverse-step variance define the bound.
        images: digits, as [`~images.digits_to_pixel_levels`] reads them.
        labels (`torch.Tensor`): one label per image (the null label for the unconditional model).
        num_timesteps (`int`, *optional*): None computes every term, T UNet calls per image, each from one draw of
            x_t. K draws the timesteps: Σ L_t from K timesteps t_k drawn from `proposal`, one in each of K equal slices
            of its distribution ([`stratified_timesteps`]), as (1/K) Σ_k L_{t_k} / p(t_k), and the decoder term as the
            mean of [`decoder_draws`] (K // 4, at least 1) draws of x_0: an unbiased estimate of the bound, which may
            fall below it for one draw (K + K // 4 calls per image).
        proposal (`torch.Tensor` of shape `(T,)`, *optional*): the probabilities of timesteps 0 … T−1 to draw from
            (entry 0 is ignored); uniform over 1 … T−1 when not given. A proposal close to the terms' own sizes
            lowers the estimate's variance. Every entry of timesteps 1 … T−1 must be positive: a timestep it never
            draws would be missing from the estimate.
        generator (`torch.Generator` or `list[torch.Generator]`, *optional*): the source of the timesteps and the
            noise: one, from which each image draws in turn, or one per image. An image's draws do not depend on its
            label or on `batch_size`, so two labels compared with the same seed see the same x_t.
        batch_size (`int`, defaults to 500): rows per UNet call.

    The bound is that of the model as it runs: a bfloat16 UNet sees each x_t rounded to bfloat16 (steps of up to
    2⁻⁸ near ±1, half a pixel bin), and that rounding is part of the model whose bound this is: it raises the bound,
    the decoder term most. The committed bounds are those of the float32 model.

    Returns:
        [`VariationalBoundOutput`]
    """
    levels = digits_to_pixel_levels(images)
    labels = _check_unet_labels(unet, labels)
    if len(labels) != len(levels):
        raise ValueError(f"Got {len(labels)} labels for {len(levels)} images.")
    generators = check_generators(generator, len(levels))
    coefficients = BoundCoefficients(scheduler)
    num_train_timesteps = coefficients.num_train_timesteps
    if num_timesteps is not None:
        if isinstance(num_timesteps, (bool, np.bool_)) or not isinstance(num_timesteps, numbers.Integral) \
                or num_timesteps < 1:
            raise ValueError(f"`num_timesteps` must be a positive integer or None (every term), got {num_timesteps!r}.")
        num_timesteps = int(num_timesteps)
    elif proposal is not None:
        raise ValueError("`proposal` shapes the timesteps an estimate draws (`num_timesteps=K`); with "
                         "num_timesteps=None every term is computed and none is drawn.")
    batch_size = check_positive_integer("batch_size", batch_size)
    if proposal is None:
        proposal = torch.ones(num_train_timesteps, dtype=torch.float64)
    proposal = check_proposal(proposal, num_train_timesteps)

    device = next(unet.parameters()).device
    x = pixel_levels_to_model_range(levels)
    all_terms = num_timesteps is None

    # Images are walked in order and each image's noise drawn as its rows join a batch, so memory is that of a batch
    # (and the image's timesteps) for any count, and the draws (an image's timesteps, then its noise, then the next
    # image's) do not depend on `batch_size`.
    decoder = torch.zeros(len(x), dtype=torch.float64)
    diffusion = torch.zeros(len(x), dtype=torch.float64)
    terms = torch.zeros(len(x), num_train_timesteps, dtype=torch.float64) if all_terms else None

    def run(parts) -> None:
        index = torch.cat([torch.full((len(t),), image) for image, t, _, _ in parts])
        t = torch.cat([t for _, t, _, _ in parts])
        weights = torch.cat([w for _, _, w, _ in parts])
        x_rows = x[index].to(device)
        alpha_prod = _per_image(coefficients.alphas_cumprod[t], x_rows)
        noise = torch.cat([n for _, _, _, n in parts]).to(device)
        x_t = alpha_prod.sqrt() * x_rows + (1 - alpha_prod).sqrt() * noise
        values = coefficients.term(x_rows, x_t, t, model_prediction(unet, x_t, t.to(device), labels[index].to(device)))
        values = values.cpu()
        if all_terms:
            terms[index, t] = values
        weighted = values * weights
        decoder.index_add_(0, index[t == 0], weighted[t == 0])
        diffusion.index_add_(0, index[t > 0], weighted[t > 0])

    pending, waiting = [], 0  # (image, timesteps, weights, noise) of the rows waiting for a batch, and their count
    for image in range(len(x)):
        timesteps, weights = image_rows(num_timesteps, proposal, generators[image])
        start = 0
        while start < len(timesteps):
            stop = min(start + batch_size - waiting, len(timesteps))
            noise = standard_normal((stop - start,) + x.shape[1:], generators[image])
            pending.append((image, timesteps[start:stop], weights[start:stop], noise))
            waiting += stop - start
            start = stop
            if waiting == batch_size:
                run(pending)
                pending, waiting = [], 0
    if pending:
        run(pending)

    nats_per_bit_dim = NUM_DIMENSIONS * math.log(2)
    prior = coefficients.prior_term(x)
    total = prior + diffusion + decoder
    return VariationalBoundOutput(
        bits_per_dim=total / nats_per_bit_dim,
        prior_bits_per_dim=prior / nats_per_bit_dim,
        diffusion_bits_per_dim=diffusion / nats_per_bit_dim,
        decoder_bits_per_dim=decoder / nats_per_bit_dim,
        log_likelihood=-total,
        terms_bits_per_dim=terms / nats_per_bit_dim if all_terms else None,
    )


@torch.no_grad()
def log_likelihood(pipe, images, labels=None, num_timesteps: int | None = None, proposal=None, generator=None,
                   batch_size: int = 500) -> VariationalBoundOutput:
    """
    `pipe.log_likelihood`: the variational bound of each digit (Ho et al., 2020, eq. 5) in bits per dimension, an upper
    bound on −log₂ p_θ(x) / 784, under `pipe`'s UNet and scheduler, conditional on `labels` or, without them, under
    the unconditional model (the null label). Defined by the scheduler: its forward process, and its `variance_type`
    for the reverse steps' variance.

    Each value is an unbiased estimate of the bound: its mean over the draws is the bound, and one draw may fall below
    it. With `num_timesteps=None` every term is computed, each from one draw of x_t (the estimate of least variance,
    1000 UNet calls per digit). With `num_timesteps=K`, K timesteps are drawn, stratified, from `proposal`, or from
    the pipeline's stored `likelihood_proposal`, shaped to the model's terms (on the shipped model, one digit's
    estimate at K = 16 varies by about 0.03 bits/dim over seeds; uniform timesteps, the fallback for a model without a
    stored proposal, by about 1 bit/dim).

    To compare labels (or models) on one digit, give each call a generator of the same seed: the draws of an image do
    not depend on its label, so the difference is not blurred by independent noise.

    Args:
        pipe (`MNISTDDPMPipeline`): the model.
        images: digits: uint8 pixels (0–255) or float images in [0, 1] (rounded to the 256 levels), shaped (28, 28),
            (N, 28, 28), (N, 1, 28, 28) or (N, 28, 28, 1), a list of such, or PIL images: whatever the pipeline's
            `__call__` returns. A digit that is not blank but has no pixel brighter than level 16 is refused as a
            scale mistake (binarised 0/1 pixels, say).
        labels (`int`, `Sequence[int]` or `torch.Tensor`, *optional*): one digit per image, or one for all.
        num_timesteps (`int`, *optional*): None computes every term (`num_train_timesteps` UNet calls per image); K
            estimates the bound from K drawn timesteps and K // 4 draws of the decoder (K + K // 4 calls).
        proposal (`torch.Tensor`, *optional*): probabilities of the timesteps to draw; the stored `likelihood_proposal`
            when not given, or else uniform.
        generator (`torch.Generator` or `list[torch.Generator]`, *optional*): the source of the timesteps and the
            noise: one for all images, or one per image.
        batch_size (`int`, defaults to 500): rows per UNet call.

    Returns:
        [`VariationalBoundOutput`]: `bits_per_dim` and its prior, diffusion and decoder shares per image,
        `log_likelihood` (−L in nats), and every term when all are computed.

    Example:

    ```py
    >>> from mnist_diffusion.data import load_mnist
    >>> images, labels = load_mnist("data/mnist", "test")
    >>> pipe.log_likelihood(images[:8], labels[:8], num_timesteps=16).bits_per_dim
    ```
    """
    levels = digits_to_pixel_levels(images).to(torch.uint8)  # read once; the bound reads uint8 as is
    if labels is None:
        labels = [null_class_label(pipe.unet)] * len(levels)
    else:
        labels = check_labels(labels, num_class_labels(pipe.unet))
        labels = labels * len(levels) if len(labels) == 1 else labels
    if proposal is None and num_timesteps is not None:
        proposal = pipe.config.get("likelihood_proposal")
        if proposal is None:
            logger.warning("This pipeline stores no `likelihood_proposal`: the timesteps are drawn uniformly, and one "
                           "digit's estimate varies by about 1 bit/dim at 16 timesteps. Store one with "
                           "`scripts/evaluate_likelihood.py --store_proposal`, or pass `proposal`.")
    output = variational_bound(pipe.unet, pipe.scheduler, levels, torch.tensor(labels), num_timesteps, proposal,
                               generator, batch_size)
    pipe.maybe_free_model_hooks()
    return output
