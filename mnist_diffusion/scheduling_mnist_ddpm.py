# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""A DDPM scheduler written from the equations of Ho et al. (2020), under diffusers' scheduler API.

This file imports only torch, numpy and diffusers, so it can be copied verbatim into a Hub repo and loaded
with `trust_remote_code=True` by someone who does not have `mnist_diffusion` installed.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

BETA_SCHEDULES = ("linear", "squaredcos_cap_v2")
VARIANCE_TYPES = ("fixed_small", "fixed_large")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


@dataclass
class MNISTDDPMSchedulerOutput(BaseOutput):
    """
    Output of [`MNISTDDPMScheduler.step`].

    Args:
        prev_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The sample one step earlier in the reverse process, x_{t-1}; the input of the next model call.
        pred_original_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)`):
            The model's current estimate of the clean image, x̂_0; useful to preview progress.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """
    The cosine schedule of Nichol & Dhariwal (2021): ᾱ(s) = cos²((s + 0.008) / 1.008 · π/2), discretised as
    β_t = 1 − ᾱ(t/T) / ᾱ((t−1)/T), capped at `max_beta` so that the last steps stay invertible.

    Args:
        num_train_timesteps (`int`): T, the number of betas.
        max_beta (`float`, defaults to 0.999): upper bound of every β_t.

    Returns:
        `torch.Tensor`: the T betas, float32.
    """

    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps), max_beta)
        for i in range(num_train_timesteps)
    ]
    return torch.tensor(betas, dtype=torch.float32)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")


class MNISTDDPMScheduler(SchedulerMixin, ConfigMixin):
    """
    Denoising diffusion probabilistic model (DDPM) scheduler, implementing

    - the forward jump  x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε  ([`~MNISTDDPMScheduler.add_noise`]), and on from x_t to
      a later x_t'  ([`~MNISTDDPMScheduler.renoise`]), and
    - the reverse step  x_{t−1} = 1/√α_t · (x_t − β_t/√(1 − ᾱ_t) · ε_θ) + σ_t · z, written through x̂_0 so that
      strided schedules (fewer inference steps than training steps) use the same formula with
      α_t := ᾱ_t / ᾱ_prev ([`~MNISTDDPMScheduler.step`]).

    Config keywords are those of diffusers' `DDPMScheduler`, so `DDIMScheduler.from_config(scheduler.config)` and
    friends accept this scheduler's config.

    Args:
        num_train_timesteps (`int`, defaults to 1000): T, the number of diffusion steps the model is trained with.
        beta_start (`float`, defaults to 1e-4): β_1 of the linear schedule.
        beta_end (`float`, defaults to 0.02): β_T of the linear schedule.
        beta_schedule (`str`, defaults to `"linear"`): `"linear"` or `"squaredcos_cap_v2"` (cosine).
        trained_betas (`np.ndarray` or `list[float]`, *optional*): explicit betas; overrides `beta_schedule`.
        variance_type (`str`, defaults to `"fixed_small"`): σ_t² = β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) · β_t
            (`"fixed_small"`) or σ_t² = β_t (`"fixed_large"`).
        clip_sample (`bool`, defaults to `True`): clip x̂_0 to [−clip_sample_range, clip_sample_range].
        clip_sample_range (`float`, defaults to 1.0): the clipping bound.
        prediction_type (`str`, defaults to `"epsilon"`): what the model predicts: the noise (`"epsilon"`), the
            clean image (`"sample"`) or the velocity √ᾱ_t · ε − √(1 − ᾱ_t) · x_0 (`"v_prediction"`).
        timestep_spacing (`str`, defaults to `"leading"`): how inference timesteps are spread over the training
            ones (`"leading"`, `"trailing"`, `"linspace"`; Table 2 of Lin et al., 2023).
        steps_offset (`int`, defaults to 0): added to every timestep of the `"leading"` spacing.
    """

    _compatibles = [
        "DDPMScheduler",
        "DDIMScheduler",
        "DPMSolverMultistepScheduler",
        "EulerDiscreteScheduler",
        "LCMScheduler",
        "UniPCMultistepScheduler",
    ]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
    ):
        _check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
        _check_choice("variance_type", variance_type, VARIANCE_TYPES)
        _check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        _check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        if trained_betas is not None:
            self.betas = torch.tensor(trained_betas, dtype=torch.float32)
            if self.betas.shape != (num_train_timesteps,):
                raise ValueError(
                    f"`trained_betas` must hold num_train_timesteps={num_train_timesteps} values, "
                    f"got shape {tuple(self.betas.shape)}."
                )
        elif beta_schedule == "linear":
            self.betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
        else:
            self.betas = cosine_betas(num_train_timesteps)
        if not bool(((self.betas > 0) & (self.betas < 1)).all()):
            raise ValueError("Every beta must lie in (0, 1); check beta_start, beta_end or trained_betas.")

        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.custom_timesteps = False
        self._set_schedule(np.arange(num_train_timesteps)[::-1].copy())

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """
        DDPM feeds x_t to the model unscaled; this exists so that pipelines can swap schedulers that do scale.

        Args:
            sample (`torch.Tensor`): the current sample x_t.
            timestep (`int`, *optional*): the current timestep (unused).

        Returns:
            `torch.Tensor`: `sample`, unchanged.
        """
        return sample

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """
        Choose the timesteps of the reverse process, before sampling.

        Args:
            num_inference_steps (`int`, *optional*): how many reverse steps to take, 1 to `num_train_timesteps`,
                spread according to `timestep_spacing`.
            device (`str` or `torch.device`, *optional*): where to put `self.timesteps`.
            timesteps (`list[int]`, *optional*): an explicit, strictly descending list of training timesteps,
                instead of `num_inference_steps`.
        """
        num_train_timesteps = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("Pass exactly one of `num_inference_steps` or `timesteps`.")

        if timesteps is not None:
            timesteps = np.array([int(t) for t in timesteps], dtype=np.int64)
            if len(timesteps) == 0:
                raise ValueError("`timesteps` must not be empty.")
            if np.any(np.diff(timesteps) >= 0):
                raise ValueError(f"`timesteps` must be strictly descending, got {timesteps.tolist()}.")
            self.custom_timesteps = True
            self.num_inference_steps = len(timesteps)
        else:
            if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
                raise ValueError(f"`num_inference_steps` must be an integer, got {num_inference_steps!r}.")
            if not 1 <= num_inference_steps <= num_train_timesteps:
                raise ValueError(
                    f"`num_inference_steps` must be between 1 and num_train_timesteps={num_train_timesteps}, "
                    f"got {num_inference_steps}."
                )
            spacing = self.config.timestep_spacing
            if spacing == "linspace":
                timesteps = np.linspace(0, num_train_timesteps - 1, num_inference_steps).round()[::-1]
            elif spacing == "leading":
                step_ratio = num_train_timesteps // num_inference_steps
                timesteps = (np.arange(0, num_inference_steps) * step_ratio)[::-1] + self.config.steps_offset
            else:
                step_ratio = num_train_timesteps / num_inference_steps
                timesteps = np.round(np.arange(num_train_timesteps, 0, -step_ratio)) - 1
            timesteps = timesteps.astype(np.int64)
            self.custom_timesteps = False
            self.num_inference_steps = num_inference_steps

        if timesteps[0] >= num_train_timesteps or timesteps[-1] < 0:
            raise ValueError(
                f"Timesteps must lie in [0, {num_train_timesteps - 1}], got {timesteps[0]} to {timesteps[-1]}."
            )
        self._set_schedule(timesteps, device)

    def _set_schedule(self, timesteps: np.ndarray, device: str | torch.device | None = None) -> None:
        # Precompute every step's coefficients once, as float32 scalars, so that `step` does no indexing or
        # small-tensor arithmetic in the sampling loop.
        self.timesteps = torch.from_numpy(timesteps).to(device)
        current = torch.from_numpy(timesteps)
        previous = torch.cat([current[1:], torch.tensor([-1])])
        alpha_prod_t = self.alphas_cumprod[current]
        alpha_prod_t_prev = torch.where(previous >= 0, self.alphas_cumprod[previous.clamp(min=0)], 1.0)
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev  # α_t of the (possibly strided) step
        current_beta_t = 1 - current_alpha_t
        if self.config.variance_type == "fixed_small":
            variance = beta_prod_t_prev / beta_prod_t * current_beta_t  # β̃_t
        else:
            variance = current_beta_t  # β_t
        # No noise is added on the step that lands on x_0, whatever its timestep.
        variance = torch.where(previous >= 0, variance, 0.0)
        coefficients = torch.stack(
            [
                alpha_prod_t**0.5,
                beta_prod_t**0.5,
                alpha_prod_t_prev**0.5 * current_beta_t / beta_prod_t,  # x̂_0 coefficient of μ̃_t, eq. (7)
                current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t,  # x_t coefficient of μ̃_t, eq. (7)
                variance**0.5,
            ],
            dim=1,
        )
        self._step_coefficients = dict(zip(timesteps.tolist(), coefficients.tolist()))
        self._previous_timestep = dict(zip(timesteps.tolist(), previous.tolist()))

    def previous_timestep(self, timestep: int | torch.Tensor) -> int | torch.Tensor:
        """
        The timestep that follows `timestep` in the reverse process, of the type diffusers' `DDPMScheduler` returns.

        Args:
            timestep (`int` or `torch.Tensor`): a timestep of the current schedule.

        Returns:
            `int` or `torch.Tensor`: the next timestep, −1 after the last one; a 0-d tensor on the device of
            `self.timesteps` once `set_timesteps` has been called, `timestep − 1` (of `timestep`'s type) before.
        """
        previous = self._previous_timestep[self._schedule_key(timestep)]
        if self.num_inference_steps is None:  # the full chain that `__init__` sets up
            return timestep - 1
        return torch.tensor(previous, device=self.timesteps.device)

    def _schedule_key(self, timestep: int | torch.Tensor) -> int:
        key = int(timestep)
        if key not in self._step_coefficients:
            raise ValueError(
                f"Timestep {key} is not in the current schedule (call `set_timesteps` first); "
                f"the schedule has {len(self._step_coefficients)} steps from {int(self.timesteps[0])} "
                f"to {int(self.timesteps[-1])}."
            )
        return key

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> MNISTDDPMSchedulerOutput | tuple:
        """
        One reverse step: from x_t and the model's output, draw x_{t−1} ~ N(μ̃_t(x_t, x̂_0), σ_t² I).

        Args:
            model_output (`torch.Tensor`): the model's prediction (noise, sample or velocity, as configured).
            timestep (`int` or `torch.Tensor`): t, an element of `self.timesteps`.
            sample (`torch.Tensor`): x_t.
            generator (`torch.Generator` or a list of them, *optional*): the source of the step's noise z.
            return_dict (`bool`, defaults to `True`): return a [`MNISTDDPMSchedulerOutput`] instead of a tuple.

        Returns:
            [`MNISTDDPMSchedulerOutput`] or `tuple`: `(prev_sample, pred_original_sample)`.
        """
        key = self._schedule_key(timestep)
        sqrt_alpha_prod, sqrt_beta_prod, x0_coeff, xt_coeff, std = self._step_coefficients[key]

        # x̂_0 = (x_t − √(1−ᾱ_t) · ε_θ) / √ᾱ_t, or its counterparts for the other parameterisations.
        if self.config.prediction_type == "epsilon":
            pred_original_sample = (sample - sqrt_beta_prod * model_output) / sqrt_alpha_prod
        elif self.config.prediction_type == "sample":
            pred_original_sample = model_output
        else:
            pred_original_sample = sqrt_alpha_prod * sample - sqrt_beta_prod * model_output
        if self.config.clip_sample:
            bound = self.config.clip_sample_range
            pred_original_sample = pred_original_sample.clamp(-bound, bound)

        prev_sample = x0_coeff * pred_original_sample + xt_coeff * sample
        if std > 0:
            noise = randn_tensor(
                model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
            )
            prev_sample = prev_sample + std * noise

        if not return_dict:
            return (prev_sample, pred_original_sample)
        return MNISTDDPMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def _sqrt_alphas_cumprod(self, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # √ᾱ_t and √(1 − ᾱ_t) for each timestep, shaped to broadcast over `like`'s non-batch dimensions.
        alphas_cumprod = self.alphas_cumprod.to(device=like.device, dtype=like.dtype)[timesteps.to(like.device)]
        shape = (-1,) + (1,) * (like.ndim - 1)
        return (alphas_cumprod**0.5).reshape(shape), ((1 - alphas_cumprod) ** 0.5).reshape(shape)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """
        The forward process in closed form, q(x_t | x_0): x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε.

        Args:
            original_samples (`torch.Tensor`): x_0, a batch of clean images.
            noise (`torch.Tensor`): ε, same shape.
            timesteps (`torch.Tensor`): one training timestep (0-based) per image.

        Returns:
            `torch.Tensor`: x_t.
        """
        sqrt_alpha_prod, sqrt_one_minus_alpha_prod = self._sqrt_alphas_cumprod(timesteps, original_samples)
        return sqrt_alpha_prod * original_samples + sqrt_one_minus_alpha_prod * noise

    def renoise(self, sample: torch.Tensor, noise: torch.Tensor, timestep: int, later_timestep: int) -> torch.Tensor:
        """
        The forward process from x_t to a noisier x_t' (t < t'), q(x_t' | x_t) in closed form:
        x_t' = √(ᾱ_t'/ᾱ_t) · x_t + √(1 − ᾱ_t'/ᾱ_t) · ε. Timestep −1 stands for x_0 (ᾱ = 1), as in
        [`~MNISTDDPMScheduler.previous_timestep`], so that `renoise(x_0, ε, −1, t)` is `add_noise` at one timestep.
        RePaint (Lugmayr et al., 2022) draws its known region and its jumps back with it.

        Args:
            sample (`torch.Tensor`): x_t.
            noise (`torch.Tensor`): ε, same shape.
            timestep (`int`): t, a training timestep (0-based), or −1 for x_0.
            later_timestep (`int`): t', a training timestep after t.

        Returns:
            `torch.Tensor`: x_t'.
        """
        timestep, later_timestep = int(timestep), int(later_timestep)
        if not -1 <= timestep < later_timestep < self.config.num_train_timesteps:
            raise ValueError(
                f"`renoise` goes from a timestep to a later one, both in [-1, {self.config.num_train_timesteps - 1}]; "
                f"got {timestep} to {later_timestep}."
            )
        # One pair of timesteps for the whole batch, so the coefficients are Python floats (double precision).
        alpha_prod_t = 1.0 if timestep == -1 else self.alphas_cumprod[timestep].item()
        alpha_prod = self.alphas_cumprod[later_timestep].item() / alpha_prod_t  # α_{t+1} · … · α_t'
        return alpha_prod**0.5 * sample + (1 - alpha_prod) ** 0.5 * noise

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """
        The target of `v_prediction` (Salimans & Ho, 2022): v = √ᾱ_t · ε − √(1 − ᾱ_t) · x_0.

        Args:
            sample (`torch.Tensor`): x_0.
            noise (`torch.Tensor`): ε.
            timesteps (`torch.Tensor`): one training timestep per image.

        Returns:
            `torch.Tensor`: v.
        """
        sqrt_alpha_prod, sqrt_one_minus_alpha_prod = self._sqrt_alphas_cumprod(timesteps, sample)
        return sqrt_alpha_prod * noise - sqrt_one_minus_alpha_prod * sample

    def __len__(self) -> int:
        return self.config.num_train_timesteps
