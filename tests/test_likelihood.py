"""Tests of `mnist_diffusion/likelihood.py` (the variational bound and the zero-shot classifier) and of the pipeline's
`log_likelihood` and `classify`: each term against a direct computation with torch.distributions and diffusers'
`DDPMScheduler`, the bound of a perfect model in closed form, the estimate's unbiasedness, and, on the shipped model,
that a real digit is more probable under its own label."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from PIL import Image
from torch.distributions import Normal, kl_divergence

from mnist_diffusion import MNISTDDPMPipeline, MNISTDDPMScheduler
from mnist_diffusion.images import digits_to_pixel_levels
from mnist_diffusion.lab.shipped import SHIPPED_MODEL, SHIPPED_STUDENT
from mnist_diffusion.likelihood import (BoundCoefficients, check_proposal, decoder_draws,
                                        discretized_gaussian_log_likelihood, gaussian_kl, stratified_timesteps,
                                        variational_bound)
from mnist_diffusion.zero_shot import trial_timesteps, zero_shot_classify

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
needs_real_digits = pytest.mark.skipif(
    not (SHIPPED_MODEL / "model_index.json").is_file() or not MNIST_DIR.is_dir(),
    reason=f"needs the shipped model and the real MNIST test digits in {MNIST_DIR}",
)
BITS = 784 * math.log(2)


class OracleUNet(torch.nn.Module):
    """A noise predictor that knows the clean digit, so it predicts the true noise of any x_t: a perfect model."""

    def __init__(self, scheduler, clean: torch.Tensor):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device and a dtype
        # The bound's own float64 ᾱ_t: the float32 ones differ by 1e-4 relative in 1 − ᾱ_t near t = 0.
        self.alphas_cumprod, self.clean = BoundCoefficients(scheduler).alphas_cumprod, clean.double()

    @property
    def dtype(self):
        return torch.float32

    def forward(self, x_t, t, labels):
        alpha_prod = self.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        noise = (x_t.double() - alpha_prod.sqrt() * self.clean) / (1 - alpha_prod).sqrt()
        return type("Output", (), {"sample": noise.float()})


def a_digit(seed: int = 0) -> torch.Tensor:
    """A digit-like uint8 image: mostly black, a bright blob, a few grey levels, both extremes present."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.zeros(1, 28, 28)
    pixels[:, 8:20, 10:18] = torch.randint(0, 256, (1, 12, 8), generator=generator).float()
    pixels[:, 12:16, 12:16] = 255
    return pixels.to(torch.uint8)


def test_gaussian_kl_matches_torch_distributions():
    mean_1, mean_2 = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    variance_1, variance_2 = torch.rand(50, dtype=torch.float64) + 0.01, torch.rand(50, dtype=torch.float64) + 0.01
    expected = kl_divergence(Normal(mean_1, variance_1.sqrt()), Normal(mean_2, variance_2.sqrt()))
    torch.testing.assert_close(gaussian_kl(mean_1, variance_1, mean_2, variance_2), expected)


def test_discretized_gaussian_is_a_distribution_over_the_256_levels_and_matches_the_cdf():
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    for mean, std in ((0.3, 0.05), (-1.0, 0.0074), (0.999, 0.01), (-0.2, 2.0)):
        log_p = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean), std)
        assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
        normal = Normal(torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64))
        upper = torch.where(levels > 0.999, torch.tensor(1.0, dtype=torch.float64), normal.cdf(levels + 1 / 255))
        lower = torch.where(levels < -0.999, torch.tensor(0.0, dtype=torch.float64), normal.cdf(levels - 1 / 255))
        direct = (upper - lower).clamp(min=1e-300).log()
        # Where the direct difference of CDFs (computed as 1 + erf, which cancels in the lower tail) keeps its digits.
        big = direct > -12
        torch.testing.assert_close(log_p[big], direct[big], rtol=1e-6, atol=1e-9)
    # Far in the tail the direct difference underflows; the tail-side computation keeps a finite log-probability.
    far = discretized_gaussian_log_likelihood(torch.tensor([0.5], dtype=torch.float64), torch.tensor([-0.5]), 0.01)
    assert torch.isfinite(far).all() and far.item() < -4000


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_each_kl_term_matches_a_direct_computation_with_diffusers_ddpm_scheduler(variance_type):
    scheduler = MNISTDDPMScheduler(variance_type=variance_type, clip_sample=False)
    reference = DDPMScheduler(variance_type=variance_type, clip_sample=False)
    coefficients = BoundCoefficients(scheduler)
    x = digits_to_pixel_levels(a_digit()).float() / 127.5 - 1
    generator = torch.Generator().manual_seed(0)
    # diffusers keeps ᾱ_t in float32, whose rounding near t = 0 (1 − ᾱ_1 ≈ 2e-4) is 1e-4 relative: its betas are
    # the reference, the products are taken again in float64.
    alphas_cumprod = torch.cumprod(1 - reference.betas.double(), 0)
    for t in (1, 2, 17, 500, 999):
        ab, ab_prev = alphas_cumprod[t], alphas_cumprod[t - 1]
        beta, alpha = reference.betas[t].double(), 1 - reference.betas[t].double()
        noise, model_noise = torch.randn(2, 1, 1, 28, 28, generator=generator, dtype=torch.float64)
        x_t = ab.sqrt() * x + (1 - ab).sqrt() * noise
        # q(x_{t−1} | x_t, x_0): eq. (7); p_θ: eq. (11) with diffusers' own variance of the step.
        posterior_mean = ab_prev.sqrt() * beta / (1 - ab) * x + alpha.sqrt() * (1 - ab_prev) / (1 - ab) * x_t
        posterior_std = ((1 - ab_prev) / (1 - ab) * beta).sqrt()
        model_mean = (x_t - beta / (1 - ab).sqrt() * model_noise) / alpha.sqrt()
        model_variance = (1 - ab_prev) / (1 - ab) * beta if variance_type == "fixed_small" else beta
        assert reference._get_variance(t).item() == pytest.approx(model_variance.item(), rel=1e-3)
        model_std = model_variance.sqrt()
        direct = kl_divergence(Normal(posterior_mean, posterior_std), Normal(model_mean, model_std)).sum()
        term = coefficients.term(x, x_t, torch.tensor([t]), model_noise)
        assert term.item() == pytest.approx(direct.item(), rel=1e-6)


def test_the_model_mean_is_the_mean_of_the_schedulers_own_step_with_clipping():
    scheduler = MNISTDDPMScheduler()  # clip_sample=True, fixed_small: the shipped configuration
    coefficients = BoundCoefficients(scheduler)
    x_t = torch.randn(1, 1, 28, 28) * 1.5
    model_output = torch.randn(1, 1, 28, 28) * 3  # far off, so that x̂_0 is clipped
    for t in (0, 1, 300):
        stepped = scheduler.step(model_output, t, x_t, generator=torch.Generator().manual_seed(1)).prev_sample
        std = scheduler._step_coefficients[t][-1]
        noise = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
        step_mean = stepped - std * noise if std > 0 else stepped
        x0 = coefficients.predicted_original(model_output.double(), x_t.double(), torch.tensor([t]))
        mean = coefficients.posterior_mean(x0, x_t.double(), torch.tensor([t]))
        torch.testing.assert_close(mean.float(), step_mean, atol=2e-4, rtol=0)  # the step computes in float32


def test_the_bound_weight_of_the_squared_epsilon_error_is_eq_12s():
    scheduler = MNISTDDPMScheduler(clip_sample=False)
    coefficients = BoundCoefficients(scheduler)
    weights = coefficients.epsilon_weights()
    x = digits_to_pixel_levels(a_digit()).double() / 127.5 - 1
    for t in (1, 10, 400):
        noise, model_noise = torch.randn(2, 1, 1, 28, 28, dtype=torch.float64)
        ab = coefficients.alphas_cumprod[t]
        x_t = ab.sqrt() * x + (1 - ab).sqrt() * noise
        index = torch.tensor([t])
        extra = coefficients.term(x, x_t, index, model_noise) - coefficients.term(x, x_t, index, noise)
        assert extra.item() == pytest.approx((weights[t] * (noise - model_noise).pow(2).sum()).item(), rel=1e-6)
    # Ho et al.'s β_t² / (2σ_t² α_t (1 − ᾱ_t)) for t ≥ 1.
    betas, alphas = scheduler.betas.double(), 1 - scheduler.betas.double()
    expected = betas**2 / (2 * coefficients.model_variance * alphas * (1 - coefficients.alphas_cumprod))
    torch.testing.assert_close(weights[1:], expected[1:])


def test_the_bound_of_a_perfect_model_is_the_prior_and_the_decoder():
    scheduler = MNISTDDPMScheduler()
    digit = a_digit()
    x = digits_to_pixel_levels(digit).float() / 127.5 - 1
    oracle = OracleUNet(scheduler, x)
    output = variational_bound(oracle, scheduler, digit, torch.tensor([3]), generator=torch.Generator().manual_seed(0))
    # x̂_0 = x_0 at every step, so every L_t vanishes (the model's σ_t² is β̃_t, the posterior's).
    assert output.diffusion_bits_per_dim.abs().item() < 1e-6  # the oracle answers in float32
    decoder_std = BoundCoefficients(scheduler).posterior_variance[1].sqrt()
    decoder = -discretized_gaussian_log_likelihood(x.double(), x.double(), decoder_std).sum() / BITS
    ab = scheduler.alphas_cumprod[-1].double()
    prior = 0.5 * (ab * (x.double() ** 2 - 1) - torch.log(1 - ab)).sum() / BITS
    assert output.decoder_bits_per_dim.item() == pytest.approx(decoder.item(), rel=1e-7)
    assert output.prior_bits_per_dim.item() == pytest.approx(prior.item(), rel=1e-6)
    assert output.bits_per_dim.item() == pytest.approx((prior + decoder).item(), rel=1e-6)
    assert output.log_likelihood.item() == pytest.approx(-output.bits_per_dim.item() * BITS, rel=1e-12)
    torch.testing.assert_close(output.terms_bits_per_dim.sum(1), output.diffusion_bits_per_dim +
                               output.decoder_bits_per_dim)


def test_the_bound_of_a_perfect_model_with_large_variances_keeps_only_the_variance_mismatch():
    scheduler = MNISTDDPMScheduler(variance_type="fixed_large")
    digit = a_digit(1)
    oracle = OracleUNet(scheduler, digits_to_pixel_levels(digit).float() / 127.5 - 1)
    output = variational_bound(oracle, scheduler, digit, torch.tensor([0]))
    coefficients = BoundCoefficients(scheduler)
    ratio = coefficients.posterior_variance[1:] / coefficients.model_variance[1:]  # β̃_t / β_t
    expected = 784 * 0.5 * (ratio - 1 - ratio.log()).sum() / BITS
    assert output.diffusion_bits_per_dim.item() == pytest.approx(expected.item(), rel=1e-6)


def test_the_sampled_estimate_is_unbiased_with_and_without_a_proposal():
    # With a perfect model and σ_t² = β_t, every term is a number (no noise), so the estimate's spread is the
    # sampling of timesteps alone, and its mean over many draws must be the sum of all terms.
    scheduler = MNISTDDPMScheduler(variance_type="fixed_large")
    digit = a_digit(2)
    oracle = OracleUNet(scheduler, digits_to_pixel_levels(digit).float() / 127.5 - 1)
    exact = variational_bound(oracle, scheduler, digit, torch.tensor([0])).diffusion_bits_per_dim.item()
    skewed = torch.linspace(2, 0.01, 1000)
    for proposal in (None, skewed):
        estimate = variational_bound(oracle, scheduler, digit.expand(40, 1, 28, 28), torch.zeros(40, dtype=torch.long),
                                     num_timesteps=100, proposal=proposal, batch_size=4000,
                                     generator=torch.Generator().manual_seed(0))
        values = estimate.diffusion_bits_per_dim
        assert abs(values.mean().item() - exact) < 4 * values.std().item() / math.sqrt(len(values)) + 1e-12
    # A proposal shaped like the terms is exact with one draw: each L_t / p(t) is the sum.
    terms = variational_bound(oracle, scheduler, digit, torch.tensor([0])).terms_bits_per_dim[0]
    shaped = variational_bound(oracle, scheduler, digit, torch.tensor([0]), num_timesteps=1,
                               proposal=torch.cat([torch.zeros(1), terms[1:]]))
    assert shaped.diffusion_bits_per_dim.item() == pytest.approx(exact, rel=1e-6)
    # The perfect model's decoder term does not depend on its draw either: the mean of K // 4 draws is that term.
    averaged = variational_bound(oracle, scheduler, digit, torch.tensor([0]), num_timesteps=16)
    assert averaged.decoder_bits_per_dim.item() == pytest.approx(terms[0].item(), rel=1e-6)


@pytest.mark.parametrize("images, message", [
    (torch.zeros(2, 28, 27, dtype=torch.uint8), r"shaped \(N, 28, 28\) .*got \(2, 28, 27\)"),
    (torch.zeros(0, 28, 28, dtype=torch.uint8), "N ≥ 1"),
    (torch.full((1, 28, 28), 1.5), r"in \[0, 1\], got values in \[1.500, 1.500\]"),
    (torch.zeros(1, 28, 28, dtype=torch.int32), "dtype torch.int32"),
])
def test_bad_images_are_refused_by_name(images, message):
    with pytest.raises(ValueError, match=message):
        digits_to_pixel_levels(images)


def test_pixel_levels_read_uint8_floats_and_pil_alike(tiny_pipe):
    digit = a_digit()
    as_float = digit.float() / 255
    as_pil = MNISTDDPMPipeline.numpy_to_pil(as_float.unsqueeze(-1).numpy())
    for other in (as_float, as_float.unsqueeze(1), as_pil, digit.unsqueeze(1)):
        assert torch.equal(digits_to_pixel_levels(other), digit.long().unsqueeze(1))


def test_bad_settings_are_refused_before_any_model_call(tiny_pipe):
    digits = a_digit().expand(2, 28, 28)
    with pytest.raises(ValueError, match="got 2 labels for 1 images|Got 2 labels for 1 images"):
        variational_bound(tiny_pipe.unet, tiny_pipe.scheduler, digits[:1], torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="`num_timesteps` must be a positive integer or None .*got 0"):
        tiny_pipe.log_likelihood(digits, [1, 2], num_timesteps=0)
    with pytest.raises(ValueError, match=r"`proposal` must hold 1000 .*got shape \(10,\)"):
        tiny_pipe.log_likelihood(digits, [1, 2], num_timesteps=4, proposal=torch.ones(10))
    with pytest.raises(ValueError, match="got 11 at index 1"):
        tiny_pipe.log_likelihood(digits, [1, 11])
    with pytest.raises(ValueError, match="`num_trials` must be a positive integer, at most 1000, got 2.5"):
        tiny_pipe.classify(digits, num_trials=2.5)
    with pytest.raises(ValueError, match=r"`weighting` must be one of \['uniform', 'bound'\], got 'vlb'"):
        tiny_pipe.classify(digits, weighting="vlb")


def test_settings_that_would_give_a_wrong_number_are_refused_by_name(tiny_pipe):
    digits = a_digit().expand(2, 28, 28)
    unet, scheduler = tiny_pipe.unet, tiny_pipe.scheduler
    for batch_size in (-1, 0, 2.5):
        with pytest.raises(ValueError, match=f"`batch_size` must be a positive integer, got {batch_size}"):
            tiny_pipe.log_likelihood(digits, [1, 2], num_timesteps=2, batch_size=batch_size)
        with pytest.raises(ValueError, match=f"`batch_size` must be a positive integer, got {batch_size}"):
            tiny_pipe.classify(digits, num_trials=2, batch_size=batch_size)
    # A proposal that never draws a timestep would leave its term out of an "unbiased" estimate.
    holey = torch.ones(1000)
    holey[5] = 0
    with pytest.raises(ValueError, match="positive at every timestep 1 … 999 .*got 0.0 at timestep 5"):
        tiny_pipe.log_likelihood(digits, [1, 2], num_timesteps=2, proposal=holey)
    holey[5] = float("nan")
    with pytest.raises(ValueError, match="got nan at timestep 5"):
        tiny_pipe.log_likelihood(digits, [1, 2], num_timesteps=2, proposal=holey)
    # Called directly, the bound checks the labels against the UNet's digits and its null label (10).
    with pytest.raises(ValueError, match="got 57 at index 1"):
        variational_bound(unet, scheduler, digits, torch.tensor([1, 57]), num_timesteps=2)
    for config, message in (({"prediction_type": "flow"}, "prediction_type 'flow'"),
                            ({"thresholding": True}, "thresholding=True"),
                            ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr=True"),
                            ({"variance_type": "learned"}, "fixed variance_type .*got 'learned'")):
        other = DDPMScheduler(**config)
        with pytest.raises(ValueError, match=message):
            variational_bound(unet, other, digits, torch.tensor([1, 2]), num_timesteps=2)
    # Integers of any kind are integers.
    output = tiny_pipe.classify(digits, num_trials=np.int64(3), prune=(np.int64(1), np.int64(2)), batch_size=np.int64(7))
    assert output.errors.shape == (2, 3, 10)
    bound = tiny_pipe.log_likelihood(digits, [1, 2], num_timesteps=np.int64(2), batch_size=np.int64(3))
    assert bound.bits_per_dim.isfinite().all()


def test_log_likelihood_without_labels_is_the_null_labels_bound(tiny_pipe):
    digits = torch.stack([a_digit(0), a_digit(1)])
    seeded = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    unconditional = tiny_pipe.log_likelihood(digits, num_timesteps=3, generator=seeded())
    null = variational_bound(tiny_pipe.unet, tiny_pipe.scheduler, digits, torch.tensor([10, 10]), 3,
                             generator=seeded())
    torch.testing.assert_close(unconditional.bits_per_dim, null.bits_per_dim)
    one_label = tiny_pipe.log_likelihood(digits, 4, num_timesteps=3, generator=seeded())
    torch.testing.assert_close(one_label.bits_per_dim,
                               tiny_pipe.log_likelihood(digits, [4, 4], num_timesteps=3, generator=seeded()).bits_per_dim)


def test_a_distilled_student_refuses_the_bound():
    if not (SHIPPED_STUDENT / "model_index.json").is_file():
        pytest.skip(f"no shipped student at {SHIPPED_STUDENT}")
    student = MNISTDDPMPipeline.from_pretrained(SHIPPED_STUDENT)
    with pytest.raises(ValueError, match="distilled student"):
        student.log_likelihood(a_digit(), 3)
    with pytest.raises(ValueError, match="distilled student"):
        student.classify(a_digit())


def test_trial_timesteps_are_spread_in_every_prefix():
    longest = trial_timesteps(100, 1000)
    for count in (10, 20, 50, 100):
        prefix = trial_timesteps(count, 1000)
        assert torch.equal(prefix, longest[:count])
        assert len(set(prefix.tolist())) == count and 0 <= prefix.min() and prefix.max() < 1000
        gaps = torch.diff(torch.cat([torch.tensor([0]), prefix.sort().values, torch.tensor([1000])]))
        assert gaps.max() < 2.7 * 1000 / count  # the three-gap theorem: no gap far above the even spacing


def test_zero_shot_scores_are_the_weighted_errors_shared_by_every_class(tiny_pipe):
    digits = torch.stack([a_digit(0), a_digit(1), a_digit(2)])
    output = tiny_pipe.classify(digits, num_trials=4, generator=torch.Generator().manual_seed(0), batch_size=7)
    assert output.errors.shape == (3, 4, 10) and output.scores.shape == (3, 10)
    torch.testing.assert_close(output.scores, output.errors.double().mean(1))
    assert torch.equal(output.labels, output.scores.argmin(1))
    # The batch layout changes nothing; the bound's weighting reweights the same errors.
    again = tiny_pipe.classify(digits, num_trials=4, generator=torch.Generator().manual_seed(0), batch_size=1000)
    torch.testing.assert_close(again.errors, output.errors)
    bound = tiny_pipe.classify(digits, num_trials=4, weighting="bound", generator=torch.Generator().manual_seed(0))
    weights = BoundCoefficients(tiny_pipe.scheduler).epsilon_weights()[output.timesteps]
    torch.testing.assert_close(bound.weights, weights / weights.sum())
    torch.testing.assert_close(bound.scores, (output.errors.double() * bound.weights.reshape(1, -1, 1)).sum(1))
    # Each error is the model's ε-error on the noised digit, for the class of its column.
    x = digits_to_pixel_levels(digits[:1]).float() / 127.5 - 1
    t = output.timesteps[2]
    noise = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))[2:3]
    ab = tiny_pipe.scheduler.alphas_cumprod[t]
    x_t = ab.sqrt() * x + (1 - ab).sqrt() * noise
    with torch.no_grad():
        predicted = tiny_pipe.unet(x_t, t.reshape(1), torch.tensor([6])).sample
    assert output.errors[0, 2, 6].item() == pytest.approx((predicted - noise).pow(2).mean().item(), rel=1e-5)


def test_pruning_gives_the_kept_classes_the_errors_of_a_full_run_and_skips_the_others(tiny_pipe):
    digits = torch.stack([a_digit(0), a_digit(1), a_digit(2)])
    full = tiny_pipe.classify(digits, num_trials=6, generator=torch.Generator().manual_seed(0))
    pruned = tiny_pipe.classify(digits, num_trials=6, prune=(2, 3), generator=torch.Generator().manual_seed(0),
                                batch_size=5)
    torch.testing.assert_close(pruned.errors[:, :2], full.errors[:, :2])
    kept = (full.errors[:, :2].double().mean(1)).topk(3, dim=1, largest=False).indices
    for image in range(3):
        others = [c for c in range(10) if c not in kept[image].tolist()]
        torch.testing.assert_close(pruned.errors[image, :, kept[image]], full.errors[image, :, kept[image]])
        assert pruned.errors[image, 2:, others].isnan().all() and torch.isinf(pruned.scores[image, others]).all()
        torch.testing.assert_close(pruned.scores[image, kept[image]], full.scores[image, kept[image]])
    assert torch.isin(pruned.labels, kept).all()
    for bad in ((6, 3), (2, 10), (0, 3), (2,), (2.0, 3)):
        with pytest.raises(ValueError, match=r"`prune` must be a pair \(after, keep\) with 1 ≤ after < num_trials=6"):
            tiny_pipe.classify(digits, num_trials=6, prune=bad)


@needs_real_digits
def test_a_real_digit_is_more_probable_under_its_own_label_on_the_shipped_model():
    from mnist_diffusion.data import load_mnist

    pipe = MNISTDDPMPipeline.from_pretrained(SHIPPED_MODEL)
    images, labels = load_mnist(MNIST_DIR, "test")
    digits = images[:3]
    bits = torch.stack([
        pipe.log_likelihood(digits, [label] * 3, num_timesteps=24, generator=torch.Generator().manual_seed(0)).bits_per_dim
        for label in range(10)
    ], dim=1)  # (image, label); the same (t, ε) draws for every label
    true_bits = bits[torch.arange(3), labels[:3]]
    for image in range(3):
        wrong = [label for label in range(10) if label != labels[image]]
        assert (true_bits[image] < bits[image, wrong]).all(), bits[image]
    # The bound is about 1.5 bits per pixel: the decoder alone costs about half of it on these near-binary digits.
    assert 0.5 < true_bits.mean() < 3


@needs_real_digits
def test_the_shipped_model_classifies_real_digits_zero_shot():
    from mnist_diffusion.data import load_mnist

    pipe = MNISTDDPMPipeline.from_pretrained(SHIPPED_MODEL)
    images, labels = load_mnist(MNIST_DIR, "test")
    chosen = torch.stack([(labels == digit).nonzero()[0, 0] for digit in range(10)])
    output = pipe.classify(images[chosen], num_trials=10, generator=torch.Generator().manual_seed(0))
    assert (output.labels == labels[chosen]).sum() >= 9, output.labels


def test_the_likelihood_evaluation_writes_its_tables_and_resumes_from_its_cache(tiny_pipe, tmp_path, synthetic_mnist):
    from mnist_diffusion.lab.figures import confusion_figure
    from mnist_diffusion.lab.likelihood_evaluation import main

    tiny_pipe.save_pretrained(tmp_path / "model")
    arguments = ["--model", str(tmp_path / "model"), "--data_dir", str(synthetic_mnist), "--pilot_images", "2",
                 "--bound_images", "6", "--bound_timesteps", "3", "--classify_images", "25", "--num_trials", "20",
                 "--timing_images", "2", "--cache_dir", str(tmp_path / "cache")]
    main(arguments + ["--output", str(tmp_path / "first.json")])
    result = json.loads((tmp_path / "first.json").read_text())
    assert len(result["all_terms"]["bits_per_dim"]) == 2 and result["bound"]["conditional"]["bits_per_dim"]["n"] == 6
    for part in ("conditional", "unconditional"):
        row = result["bound"][part]
        total = row["prior_bits_per_dim"] + row["diffusion_bits_per_dim"] + row["decoder_bits_per_dim"]
        assert row["bits_per_dim"]["mean"] == pytest.approx(total) and row["bits_per_dim"]["standard_error"] > 0
    rows = result["zero_shot"]["accuracy"]
    # Trial counts up to the run's 20, each weighting; a confusion matrix counts every digit once.
    assert [(r["weighting"], r["num_trials"]) for r in rows] == [("uniform", 10), ("uniform", 20), ("bound", 10),
                                                                  ("bound", 20)]
    for row in rows:
        matrix = torch.tensor(row["confusion_matrix"])
        assert matrix.sum() == 25 and matrix.trace() / 25 == pytest.approx(row["accuracy"])
    assert [t["num_trials"] for t in result["zero_shot"]["timing"]] == [10, 20]  # the run's own counts only
    # Pruning read from the stored errors is what `classify(prune=...)` computes.
    pruned = result["zero_shot"]["pruning"]["uniform"][0]
    assert (pruned["prune_after"], pruned["keep"], pruned["unet_rows_per_image"]) == (10, 2, 10 * 10 + 10 * 2)
    from mnist_diffusion.data import load_mnist

    images, labels = load_mnist(synthetic_mnist, "test")
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0))[8:33]
    pipe = MNISTDDPMPipeline.from_pretrained(tmp_path / "model")
    correct = sum(
        (pipe.classify(images[order[start : start + 20]], num_trials=20, prune=(10, 2),
                       generator=torch.Generator().manual_seed(start)).labels == labels[order[start : start + 20]]).sum()
        for start in (0, 20))
    assert correct.item() / 25 == pytest.approx(pruned["accuracy"])
    # The pilot, the two bounds and two chunks of 20 and 5 digits were kept; a rerun reads them (their recorded
    # seconds are the first run's) and reaches the same tables.
    kept = lambda: sorted(path.name.split("-")[0] for path in (tmp_path / "cache").iterdir())  # noqa: E731
    assert kept() == ["bound", "bound", "bound", "zero", "zero"]
    main(arguments + ["--output", str(tmp_path / "second.json")])
    again = json.loads((tmp_path / "second.json").read_text())
    assert again["zero_shot"]["accuracy"] == rows and again["bound"] == result["bound"]
    assert again["all_terms"] == result["all_terms"]
    assert again["zero_shot"]["seconds_in_run"] == result["zero_shot"]["seconds_in_run"]
    assert kept() == ["bound", "bound", "bound", "zero", "zero"]
    # Five more digits to classify: the first chunk is reused, the last one (now 10 digits, not 5) is not.
    main([a if a != "25" else "30" for a in arguments] + ["--output", str(tmp_path / "third.json")])
    third = json.loads((tmp_path / "third.json").read_text())
    assert third["zero_shot"]["num_images"] == 30 and torch.tensor(
        third["zero_shot"]["accuracy"][0]["confusion_matrix"]).sum() == 30
    assert kept() == ["bound", "bound", "bound", "zero", "zero", "zero"]
    pytest.importorskip("matplotlib")
    assert Image.open(confusion_figure(tmp_path / "first.json", tmp_path / "confusion.png")).size[0] > 400


@pytest.mark.parametrize("arguments, message", [
    (["--num_trials", "0"], "--num_trials must be at least 1, got 0"),
    (["--bound_images", "1"], "--bound_images must be at least 2, got 1"),
    (["--classify_images", "9990"], "at most the 10000 test digits"),
    (["--seed", "-1"], "--seed must be in 0 … "),
    (["--output", "."], "--output . must be a file path"),
])
def test_the_likelihood_evaluation_refuses_bad_sizes_before_loading_anything(arguments, message, capsys):
    from mnist_diffusion.lab.likelihood_evaluation import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--output", "unused.json", "--data_dir", "/nonexistent"] + arguments)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_the_likelihood_evaluation_refuses_a_model_without_a_bound_before_scoring_a_digit(tiny_pipe, tmp_path,
                                                                                      synthetic_mnist, capsys):
    from mnist_diffusion.lab.likelihood_evaluation import main

    tiny_pipe.scheduler = MNISTDDPMScheduler.from_config(tiny_pipe.scheduler.config, prediction_type="v_prediction")
    tiny_pipe.save_pretrained(tmp_path / "model")
    for model, message in ((tmp_path / "model", "prediction_type is 'v_prediction'"),
                           (tmp_path / "missing", "cannot be loaded as a pipeline")):
        with pytest.raises(SystemExit) as exit_info:
            main(["--model", str(model), "--data_dir", str(synthetic_mnist), "--output", str(tmp_path / "out.json"),
                  "--pilot_images", "2", "--bound_images", "2", "--classify_images", "2", "--timing_images", "1"])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_without_the_package_the_methods_say_what_to_install(tiny_pipe, monkeypatch):
    # A Hub repo's remote-code copy of the pipeline has the methods but not mnist_diffusion/likelihood.py or zero_shot.py.
    import importlib

    real_import = importlib.import_module

    def without_package(name, *args):
        if name in ("mnist_diffusion.likelihood", "mnist_diffusion.zero_shot"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_package)
    for method in (tiny_pipe.log_likelihood, tiny_pipe.classify):
        with pytest.raises(ImportError, match="need the mnist-diffusion package"):
            method(a_digit())


def test_the_documented_likelihood_and_cas_tables_are_the_committed_results():
    from mnist_diffusion.lab.reporting import (CAS_RESULTS, LIKELIHOOD_RESULTS, bound_rows, cas_table, pruning_rows,
                                               zero_shot_rows)

    from .conftest import documentation

    docs = documentation()
    likelihood = SHIPPED_MODEL / LIKELIHOOD_RESULTS
    if not likelihood.is_file():
        pytest.skip(f"no {likelihood}")
    result = json.loads(likelihood.read_text())
    for row in bound_rows(result) + zero_shot_rows(result) + pruning_rows(result):
        assert row in docs, f"neither README.md nor docs/ shows the measured row {row}"
    for folder in (SHIPPED_MODEL, SHIPPED_STUDENT):
        if (folder / CAS_RESULTS).is_file():
            for row in cas_table(json.loads((folder / CAS_RESULTS).read_text())).splitlines()[2:]:
                assert row in docs, f"neither README.md nor docs/ shows the measured row {row}"


def test_the_importance_proposal_follows_the_terms_and_cuts_the_spread_of_the_estimate():
    from mnist_diffusion.lab.likelihood_evaluation import UNIFORM_SHARE, estimate_spread, importance_proposal

    shape = 1 / torch.arange(1, 1001, dtype=torch.float64) ** 1.5  # most of the sum at small t, as measured
    terms = torch.stack([scale * shape for scale in (1.0, 1.3, 0.8)])
    proposal = importance_proposal(terms)
    assert proposal[0] == 0 and proposal.sum().item() == pytest.approx(1.0)
    assert proposal[1:].min().item() >= UNIFORM_SHARE / 999 - 1e-15
    spread = estimate_spread(terms, 16)
    assert spread["proposal"] < spread["uniform"] / 5
    # Uniform draws of L_t: the spread of a uniform sample mean, σ = √(999 Σ L² − (Σ L)²) / √K for one digit.
    single = shape[1:]
    expected = ((999 * (single**2).sum() - single.sum() ** 2) / 16).sqrt().item()
    assert estimate_spread(terms[:1], 16)["uniform"] == pytest.approx(expected)


def test_the_draws_do_not_depend_on_the_batch_size(tiny_pipe):
    digits = torch.stack([a_digit(0), a_digit(1), a_digit(2)])
    outputs = [tiny_pipe.log_likelihood(digits, [1, 2, 3], num_timesteps=5, batch_size=size,
                                        generator=torch.Generator().manual_seed(3)) for size in (4, 18, 500)]
    for other in outputs[1:]:
        torch.testing.assert_close(other.bits_per_dim, outputs[0].bits_per_dim)


# Issue 35: no silent wrong number on the likelihood surface.

@pytest.mark.parametrize("scaled", [
    lambda digit: (digit > 127).to(torch.uint8),  # binarised, still 0 and 1
    lambda digit: digit.float() / 65535,  # floats far below [0, 1]'s scale
    lambda digit: digit.float() / 255 / 1000,  # so far below that they would round to a blank digit
])
def test_a_batch_too_dark_to_be_pixel_levels_is_refused_by_both_methods(tiny_pipe, scaled):
    digits = torch.cat([a_digit(0), a_digit(1)])
    wrong = scaled(digits)
    for method in (lambda: tiny_pipe.log_likelihood(wrong, [1, 2], num_timesteps=2),
                   lambda: tiny_pipe.classify(wrong, num_trials=2)):
        with pytest.raises(ValueError, match=r"Digit 0 is too dark .*level (1|0.992|0.255) of 0–255.*blank digit \(all 0\) "
                                             r"is valid"):
            method()
    blank = torch.zeros(1, 28, 28, dtype=torch.uint8)
    assert digits_to_pixel_levels(torch.cat([blank, digits])).shape == (3, 1, 28, 28)  # a blank digit is valid


def test_what_the_pipeline_returns_and_takes_is_read_as_the_same_digits(tiny_pipe):
    digits = torch.cat([a_digit(0), a_digit(1)])
    as_float = digits.float() / 255
    as_np = as_float.unsqueeze(-1).numpy()  # output_type="np": (N, 28, 28, 1)
    expected = digits.long().unsqueeze(1)
    forms = [as_np, list(as_float.unsqueeze(1)), list(digits), MNISTDDPMPipeline.numpy_to_pil(as_np)]
    for form in forms:
        assert torch.equal(digits_to_pixel_levels(form), expected)
    one_pil = MNISTDDPMPipeline.numpy_to_pil(as_np)[0]
    assert torch.equal(digits_to_pixel_levels(one_pil), expected[:1])
    seeded = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    reference = tiny_pipe.log_likelihood(digits, [1, 2], num_timesteps=3, generator=seeded()).bits_per_dim
    for form in forms:
        torch.testing.assert_close(tiny_pipe.log_likelihood(form, [1, 2], num_timesteps=3, generator=seeded()).bits_per_dim,
                                   reference)
    with pytest.raises(ValueError, match="one dtype"):
        digits_to_pixel_levels([digits[0], as_float[0]])


def test_a_list_of_generators_gives_each_image_the_draws_of_its_own(tiny_pipe):
    digits = torch.cat([a_digit(0), a_digit(1)])
    generators = lambda: [torch.Generator().manual_seed(5), torch.Generator().manual_seed(9)]  # noqa: E731
    bound = tiny_pipe.log_likelihood(digits, [1, 2], num_timesteps=3, generator=generators()).bits_per_dim
    alone = [tiny_pipe.log_likelihood(digits[i : i + 1], [1, 2][i], num_timesteps=3,
                                      generator=torch.Generator().manual_seed(seed)).bits_per_dim
             for i, seed in enumerate((5, 9))]
    torch.testing.assert_close(bound, torch.cat(alone))
    errors = tiny_pipe.classify(digits, num_trials=6, generator=generators()).errors
    # With a generator per image, the first n trials of a run are exactly a run with n trials, for every image.
    shorter = tiny_pipe.classify(digits, num_trials=3, generator=generators()).errors
    torch.testing.assert_close(errors[:, :3], shorter)
    with pytest.raises(ValueError, match="Got 1 generators for 2 images"):
        tiny_pipe.classify(digits, generator=generators()[:1])


def test_the_zero_shot_classifier_refuses_class_counts_the_unet_does_not_have(tiny_pipe):
    digits = a_digit()
    for num_classes in (0, 1, 11, 12, 2.5):
        with pytest.raises(ValueError, match=rf"`num_classes` must be an integer ≥ 2, at most the 10 digits .*got "
                                             rf"{num_classes}"):
            zero_shot_classify(tiny_pipe.unet, tiny_pipe.scheduler, digits, num_classes, num_trials=2)
    assert zero_shot_classify(tiny_pipe.unet, tiny_pipe.scheduler, digits, 10, num_trials=2).scores.shape == (1, 10)


def test_the_functions_refuse_a_distilled_students_unet_and_scheduler(tiny_pipe):
    from diffusers import LCMScheduler

    student_scheduler = LCMScheduler.from_config(tiny_pipe.scheduler.config)
    with pytest.raises(ValueError, match="LCMScheduler, a consistency model's"):
        variational_bound(tiny_pipe.unet, student_scheduler, a_digit(), torch.tensor([3]), num_timesteps=2)
    with pytest.raises(ValueError, match="LCMScheduler, a consistency model's"):
        zero_shot_classify(tiny_pipe.unet, student_scheduler, a_digit(), 10, num_trials=2)


def test_memory_is_that_of_a_batch_for_any_count(tiny_pipe, monkeypatch):
    import mnist_diffusion.likelihood as likelihood

    drawn = []
    randn = likelihood.standard_normal
    monkeypatch.setattr(likelihood, "standard_normal",
                        lambda shape, generator: drawn.append(shape[0]) or randn(shape, generator))
    tiny_pipe.log_likelihood(a_digit(), 3, num_timesteps=40, generator=torch.Generator().manual_seed(0), batch_size=8)
    assert max(drawn) <= 8 and sum(drawn) == 40 + 40 // 4  # noise drawn a batch at a time, every row once
    with pytest.raises(ValueError, match="`num_trials` must be a positive integer, at most 1000, got 1000000"):
        tiny_pipe.classify(a_digit(), num_trials=10**6)


def test_the_estimate_is_stratified_and_the_decoder_averaged(tiny_pipe):
    proposal = check_proposal(torch.rand(1000, generator=torch.Generator().manual_seed(1)) + 0.01, 1000)
    drawn = stratified_timesteps(proposal, 16, torch.Generator().manual_seed(0))
    cumulative = (proposal[1:] / proposal[1:].sum()).cumsum(0)
    # One draw in each sixteenth of the proposal's distribution.
    slices = torch.searchsorted(cumulative * 16, torch.arange(1, 16).double())
    assert ((drawn[1:] - 1) >= slices).all() and ((drawn[:-1] - 1) <= slices).all()
    assert decoder_draws(16) == 4 and decoder_draws(3) == 1


def test_a_pipeline_without_a_stored_proposal_says_its_estimate_is_uniform(tiny_pipe, caplog):
    with caplog.at_level("WARNING"):
        tiny_pipe.log_likelihood(a_digit(), 3, num_timesteps=2)
    assert "stores no `likelihood_proposal`" in caplog.text
    stored = torch.ones(1000).double()
    stored[500:] = 1e-3
    tiny_pipe.register_to_config(likelihood_proposal=stored.tolist())
    seeded = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    default = tiny_pipe.log_likelihood(a_digit(), 3, num_timesteps=4, generator=seeded()).bits_per_dim
    given = tiny_pipe.log_likelihood(a_digit(), 3, num_timesteps=4, proposal=stored, generator=seeded()).bits_per_dim
    torch.testing.assert_close(default, given)


@needs_real_digits
def test_one_digits_default_estimate_varies_by_hundredths_over_seeds_on_the_shipped_model():
    from mnist_diffusion.data import load_mnist

    pipe = MNISTDDPMPipeline.from_pretrained(SHIPPED_MODEL)
    assert pipe.config.likelihood_proposal is not None
    images, labels = load_mnist(MNIST_DIR, "test")
    seeds = 24
    estimates = pipe.log_likelihood(images[7].expand(seeds, 28, 28), labels[7].expand(seeds), num_timesteps=16,
                                    generator=[torch.Generator().manual_seed(s) for s in range(seeds)]).bits_per_dim
    assert estimates.std() <= 0.05, estimates


def test_a_callback_that_sets_a_guidance_a_call_would_refuse_is_refused(tiny_pipe):
    def set_guidance(scale=None, interval=None):
        def callback(pipe, step, t, tensors):
            if scale is not None:
                pipe._guidance_scale = scale
            if interval is not None:
                pipe._guidance_interval = interval
            return tensors
        return callback

    for callback, message in ((set_guidance(scale=float("nan")), "must be a finite number ≥ 0, got nan"),
                              (set_guidance(interval=(500, 2000)), "`guidance_interval` must be")):
        with pytest.raises(ValueError, match=f"changed the guidance at step 0: .*{message}"):
            tiny_pipe(labels=[1], num_inference_steps=3, callback_on_step_end=callback)
    tiny_pipe(labels=[1], num_inference_steps=3, callback_on_step_end=set_guidance(scale=2.0))  # a valid change
    assert tiny_pipe.guidance_scale == 2.0
    tiny_pipe.register_to_config(distilled_guidance_scale=1.4)
    with pytest.raises(ValueError, match="changed the guidance at step 0: `guidance_scale` must be 1 for this "
                                         "distilled student, got 3"):
        tiny_pipe(labels=[1], num_inference_steps=3, callback_on_step_end=set_guidance(scale=3))


def test_a_stored_proposal_is_checked_at_load_and_a_given_one_wins(tiny_pipe, tmp_path):
    for bad, message in (([0.5] * 10, r"of shape \(10,\)"), ("uniform", "got 'uniform'"),
                         ([float("nan")] * 1000, "with NaN or inf")):
        with pytest.raises(ValueError, match=f"`likelihood_proposal` \\(model_index.json\\) must be .*{message}"):
            MNISTDDPMPipeline(unet=tiny_pipe.unet, scheduler=tiny_pipe.scheduler, likelihood_proposal=bad)
    stored = torch.ones(1000).double()
    stored[500:] = 1e-3
    pipe = MNISTDDPMPipeline(unet=tiny_pipe.unet, scheduler=tiny_pipe.scheduler, likelihood_proposal=stored)
    pipe.save_pretrained(tmp_path / "model")  # a tensor given is stored as a list, which JSON can hold
    assert MNISTDDPMPipeline.from_pretrained(tmp_path / "model").config.likelihood_proposal == stored.tolist()
    seeded = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    given = pipe.log_likelihood(a_digit(), 3, num_timesteps=4, proposal=torch.ones(1000), generator=seeded())
    uniform = tiny_pipe.log_likelihood(a_digit(), 3, num_timesteps=4, proposal=torch.ones(1000), generator=seeded())
    torch.testing.assert_close(given.bits_per_dim, uniform.bits_per_dim)
    with pytest.raises(ValueError, match="with num_timesteps=None every term is computed"):
        pipe.log_likelihood(a_digit(), 3, proposal=torch.ones(1000))


def test_one_label_as_a_0d_tensor_and_one_channels_last_digit_are_read(tiny_pipe):
    digit = a_digit()
    seeded = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    expected = tiny_pipe.log_likelihood(digit, 3, num_timesteps=2, generator=seeded()).bits_per_dim
    channels_last = (digit.float() / 255).permute(1, 2, 0).numpy()  # (28, 28, 1): one element of output_type="np"
    torch.testing.assert_close(
        tiny_pipe.log_likelihood(channels_last, torch.tensor(3), num_timesteps=2, generator=seeded()).bits_per_dim,
        expected)
