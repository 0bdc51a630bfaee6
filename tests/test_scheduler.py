import itertools

import pytest
import torch
from diffusers import DDPMScheduler

from mnist_diffusion import MNISTDDPMScheduler

OPTION_GRID = list(
    itertools.product(
        ["linear", "squaredcos_cap_v2"],
        ["fixed_small", "fixed_large"],
        [True, False],
        ["epsilon", "sample", "v_prediction"],
        ["leading", "trailing", "linspace"],
        [0, 1],
    )
)


def toy_model(sample: torch.Tensor, t: int) -> torch.Tensor:
    """A deterministic stand-in for a trained network, so that both schedulers see the same model outputs."""
    return torch.tanh(sample) * 0.9 + 0.05 * (t / 1000)


def make_pair(**config):
    return MNISTDDPMScheduler(**config), DDPMScheduler(**config)


def run_both(ours, reference, num_inference_steps=None, timesteps=None):
    """Run the whole reverse trajectory with both schedulers from the same noise and the same generator seed."""
    ours.set_timesteps(num_inference_steps, timesteps=timesteps)
    reference.set_timesteps(num_inference_steps, timesteps=timesteps)
    assert ours.timesteps.tolist() == reference.timesteps.tolist()
    generator_ours, generator_ref = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    x_ours = x_ref = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    last = len(ours.timesteps) - 1
    for i, t in enumerate(ours.timesteps):
        out = ours.step(toy_model(x_ours, int(t)), t, x_ours, generator=generator_ours)
        ref = reference.step(toy_model(x_ref, int(t)), t, x_ref, generator=generator_ref)
        torch.testing.assert_close(out.pred_original_sample, ref.pred_original_sample, atol=1e-5, rtol=0)
        if i < last or int(t) == 0:
            torch.testing.assert_close(out.prev_sample, ref.prev_sample, atol=1e-5, rtol=0)
        else:
            # The step that lands on x_0 from t > 0 (trailing spacing, steps_offset): diffusers still adds σ_t·z
            # there; the spec adds no noise at the last step, so x_0 is exactly diffusers' noiseless mean x̂_0.
            torch.testing.assert_close(out.prev_sample, ref.pred_original_sample, atol=1e-5, rtol=0)
        x_ours, x_ref = out.prev_sample, ref.prev_sample
    return x_ours


@pytest.mark.parametrize("beta_schedule,variance_type,clip_sample,prediction_type,spacing,offset", OPTION_GRID)
def test_matches_diffusers_ddpm_strided(beta_schedule, variance_type, clip_sample, prediction_type, spacing, offset):
    config = dict(
        beta_schedule=beta_schedule,
        variance_type=variance_type,
        clip_sample=clip_sample,
        prediction_type=prediction_type,
        timestep_spacing=spacing,
        steps_offset=offset,
    )
    ours, reference = make_pair(**config)
    for steps in (50, 7):
        run_both(ours, reference, num_inference_steps=steps)


@pytest.mark.parametrize("beta_schedule,variance_type,prediction_type", itertools.product(
    ["linear", "squaredcos_cap_v2"], ["fixed_small", "fixed_large"], ["epsilon", "sample", "v_prediction"]))
def test_matches_diffusers_ddpm_full_chain(beta_schedule, variance_type, prediction_type):
    ours, reference = make_pair(
        beta_schedule=beta_schedule, variance_type=variance_type, prediction_type=prediction_type
    )
    run_both(ours, reference, num_inference_steps=1000)


def test_matches_diffusers_with_custom_timesteps_trained_betas_and_clip_range():
    betas = torch.linspace(2e-4, 0.03, 200).tolist()
    ours, reference = make_pair(num_train_timesteps=200, trained_betas=betas, clip_sample_range=0.5)
    run_both(ours, reference, timesteps=[199, 150, 120, 60, 30, 10, 3, 0])


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_add_noise_and_velocity_match_diffusers(beta_schedule):
    ours, reference = make_pair(beta_schedule=beta_schedule)
    x0 = torch.rand(16, 1, 28, 28) * 2 - 1
    noise = torch.randn_like(x0)
    timesteps = torch.randint(0, 1000, (16,))
    torch.testing.assert_close(
        ours.add_noise(x0, noise, timesteps), reference.add_noise(x0, noise, timesteps), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        ours.get_velocity(x0, noise, timesteps), reference.get_velocity(x0, noise, timesteps), atol=1e-6, rtol=0
    )


def test_add_noise_is_the_closed_form_of_the_spec():
    scheduler = MNISTDDPMScheduler()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    x0, noise = torch.ones(3, 1, 2, 2), torch.full((3, 1, 2, 2), 2.0)
    t = torch.tensor([0, 499, 999])
    expected = alpha_bar[t].sqrt()[:, None, None, None] * 1.0 + (1 - alpha_bar[t]).sqrt()[:, None, None, None] * 2.0
    torch.testing.assert_close(scheduler.add_noise(x0, noise, t).double(), expected.expand(3, 1, 2, 2), atol=1e-5, rtol=0)
    # x_T is almost pure noise: ᾱ_T ≈ 4e-5 for the linear schedule.
    assert alpha_bar[-1] < 1e-4


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_renoise_is_the_forward_process_from_one_timestep_to_a_later_one(beta_schedule):
    """x_t' = √(ᾱ_t'/ᾱ_t) x_t + √(1 − ᾱ_t'/ᾱ_t) ε; from t = −1 (x_0) that is add_noise."""
    scheduler = MNISTDDPMScheduler(beta_schedule=beta_schedule)
    alpha_bar = scheduler.alphas_cumprod.double()
    x, noise = torch.rand(2, 1, 4, 4) * 2 - 1, torch.randn(2, 1, 4, 4)
    for t, later in [(99, 119), (0, 999), (500, 501)]:
        ratio = alpha_bar[later] / alpha_bar[t]
        expected = ratio.sqrt() * x.double() + (1 - ratio).sqrt() * noise.double()
        torch.testing.assert_close(scheduler.renoise(x, noise, t, later).double(), expected, atol=1e-6, rtol=0)
    for later in (0, 420, 999):
        torch.testing.assert_close(scheduler.renoise(x, noise, -1, later),
                                   scheduler.add_noise(x, noise, torch.tensor([later, later])), atol=1e-6, rtol=0)
    # Two jumps are one: the means multiply, and the variances add to 1 − ᾱ_t''/ᾱ_t.
    zero, one = torch.zeros(1), torch.ones(1)
    mean = scheduler.renoise(scheduler.renoise(one, zero, 100, 300), zero, 300, 700)
    variance = scheduler.renoise(scheduler.renoise(zero, one, 100, 300), zero, 300, 700) ** 2 + (
        scheduler.renoise(zero, one, 300, 700) ** 2)
    torch.testing.assert_close(mean, scheduler.renoise(one, zero, 100, 700), atol=1e-6, rtol=0)
    torch.testing.assert_close(variance, scheduler.renoise(zero, one, 100, 700) ** 2, atol=1e-6, rtol=0)


@pytest.mark.parametrize("t,later", [(300, 300), (300, 200), (-2, 10), (10, 1000)])
def test_renoise_refuses_a_timestep_that_is_not_later(t, later):
    with pytest.raises(ValueError, match=f"from a timestep to a later one.*got {t} to {later}"):
        MNISTDDPMScheduler().renoise(torch.zeros(1), torch.zeros(1), t, later)


def test_step_is_the_reverse_mean_of_the_spec_plus_fixed_small_noise():
    """x_{t−1} = 1/√α_t (x_t − β_t/√(1−ᾱ_t) ε) + σ_t z, with σ_t² = β̃_t, at a single full-chain step."""
    scheduler = MNISTDDPMScheduler(clip_sample=False)
    t = 500
    beta, alpha_bar, alpha_bar_prev = scheduler.betas[t], scheduler.alphas_cumprod[t], scheduler.alphas_cumprod[t - 1]
    x_t, eps = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    out = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(3))
    z = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    sigma = ((1 - alpha_bar_prev) / (1 - alpha_bar) * beta).sqrt()
    expected = (x_t - beta / (1 - alpha_bar).sqrt() * eps) / (1 - beta).sqrt() + sigma * z
    torch.testing.assert_close(out.prev_sample, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pred_original_sample, (x_t - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt())


def test_last_step_adds_no_noise():
    scheduler = MNISTDDPMScheduler(variance_type="fixed_large", timestep_spacing="trailing")
    scheduler.set_timesteps(10)
    last = scheduler.timesteps[-1]
    assert int(last) > 0
    x, eps = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    a = scheduler.step(eps, last, x, generator=torch.Generator().manual_seed(0)).prev_sample
    b = scheduler.step(eps, last, x, generator=torch.Generator().manual_seed(1)).prev_sample
    assert torch.equal(a, b)


def test_set_timesteps_strided_and_errors():
    scheduler = MNISTDDPMScheduler()
    scheduler.set_timesteps(50)
    assert scheduler.timesteps.tolist() == list(range(980, -1, -20))
    scheduler.set_timesteps(timesteps=[900, 500, 10])
    assert scheduler.previous_timestep(500) == 10 and scheduler.previous_timestep(10) == -1
    with pytest.raises(ValueError, match="between 1 and num_train_timesteps=1000, got 1001"):
        scheduler.set_timesteps(1001)
    with pytest.raises(ValueError, match="strictly descending"):
        scheduler.set_timesteps(timesteps=[10, 500, 900])
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        scheduler.set_timesteps(timesteps=[1000, 10])
    with pytest.raises(ValueError, match="exactly one"):
        scheduler.set_timesteps(10, timesteps=[5, 1])
    with pytest.raises(ValueError, match="Timestep 7 is not in the current schedule"):
        scheduler.step(torch.zeros(1, 1, 2, 2), 7, torch.zeros(1, 1, 2, 2))


@pytest.mark.parametrize(
    "option,value",
    [("beta_schedule", "scaled_linear"), ("variance_type", "learned"), ("prediction_type", "x0"),
     ("timestep_spacing", "uniform")],
)
def test_unsupported_options_are_named(option, value):
    with pytest.raises(ValueError, match=f"`{option}` must be one of .*'{value}'"):
        MNISTDDPMScheduler(**{option: value})


def test_config_round_trip(tmp_path):
    scheduler = MNISTDDPMScheduler(beta_schedule="squaredcos_cap_v2", variance_type="fixed_large", steps_offset=1)
    scheduler.save_pretrained(tmp_path)
    loaded = MNISTDDPMScheduler.from_pretrained(tmp_path)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}
    assert public(loaded.config) == public(scheduler.config)
    torch.testing.assert_close(loaded.alphas_cumprod, scheduler.alphas_cumprod, atol=0, rtol=0)


def test_previous_timestep_returns_what_diffusers_returns():
    ours, reference = make_pair()
    for t in (999, torch.tensor(500), 0):  # before set_timesteps: t − 1, of t's type
        mine, theirs = ours.previous_timestep(t), reference.previous_timestep(t)
        assert type(mine) is type(theirs) and int(mine) == int(theirs)
    for configure in (dict(num_inference_steps=10), dict(timesteps=[900, 500, 10])):
        ours.set_timesteps(**configure)
        reference.set_timesteps(**configure)
        for t in reference.timesteps.tolist():
            mine, theirs = ours.previous_timestep(t), reference.previous_timestep(t)
            assert torch.is_tensor(mine) and mine.ndim == 0 and mine.dtype == theirs.dtype
            assert mine.item() == theirs.item()


@pytest.mark.parametrize("variance_type, differs", [("fixed_small", False), ("fixed_large", True)])
def test_the_noiseless_last_step_differs_from_diffusers_only_for_fixed_large(variance_type, differs):
    # The README's claim: on a trailing schedule's last step (t > 0), diffusers' fixed_small variance is β̃_t = 0
    # (clamped to 1e-20), so only fixed_large makes diffusers add visible noise there.
    ours = MNISTDDPMScheduler(variance_type=variance_type, timestep_spacing="trailing")
    reference = DDPMScheduler(variance_type=variance_type, timestep_spacing="trailing")
    ours.set_timesteps(10)
    reference.set_timesteps(10)
    last = ours.timesteps[-1]
    assert int(last) > 0
    x, eps = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    a = ours.step(eps, last, x, generator=torch.Generator().manual_seed(0)).prev_sample
    b = reference.step(eps, last, x, generator=torch.Generator().manual_seed(0)).prev_sample
    gap = (a - b).abs().max().item()
    assert gap > 0.1 if differs else gap < 1e-8
