# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""`MNISTDDPMInpaintPipeline`: complete a partly hidden digit as a digit of the class you ask for.

The method is RePaint (Lugmayr et al., "RePaint: Inpainting using Denoising Diffusion Probabilistic Models",
CVPR 2022), which needs no retraining: at every reverse step the known pixels are drawn from the forward process
q(x_{t−1} | x_0) of the given image and the unknown ones from the model's reverse step, and every `jump_length`
steps the chain jumps back by re-noising (`jump_n_sample` times in all) so that the two regions come to agree.
"""

from collections.abc import Callable, Sequence

import torch
from diffusers import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from .images import IMAGE_SIZE, digits_to_unit_range
from .pipeline_mnist_ddpm import MNISTDDPMPipeline, step_guidance_scale
from .pipeline_mnist_ddpm_checks import check_positive_integer
from .scheduling_mnist_ddpm import MNISTDDPMScheduler


def repaint_schedule(timesteps: list[int], jump_length: int, jump_n_sample: int) -> list[tuple[int, int]]:
    """
    RePaint's path through a reverse schedule (Lugmayr et al., 2022, Algorithm 1, in the order of diffusers'
    `RePaintScheduler.set_timesteps`): down from x_T to x_0 one step at a time, except that on reaching x_0, and
    every `jump_length` steps above it (short of the top `jump_length`), it climbs back `jump_length` steps,
    `jump_n_sample − 1` times, so that each of those stretches is run `jump_n_sample` times.

    Args:
        timesteps (`list[int]`): the reverse schedule, `scheduler.timesteps` after `set_timesteps`.
        jump_length (`int`): the length of a stretch, and of each climb back.
        jump_n_sample (`int`): how often each stretch is run.

    Returns:
        `list[tuple[int, int]]`: one `(t, t_next)` pair per move: a denoising step when t_next < t (t_next = −1 is
        x_0, as in `scheduler.previous_timestep`), a re-noising step when t_next > t.
    """
    levels = [-1, *reversed(timesteps)]  # levels[k]: the timestep k steps above x_0
    jumps_left = {level: jump_n_sample - 1 for level in range(0, len(timesteps) - jump_length, jump_length)}
    level, schedule = len(timesteps), []
    while level > 0:
        schedule.append((levels[level], levels[level - 1]))
        level -= 1
        if jumps_left.get(level, 0) > 0:
            jumps_left[level] -= 1
            schedule += [(levels[level + k], levels[level + k + 1]) for k in range(jump_length)]
            level += jump_length
    return schedule


class MNISTDDPMInpaintPipeline(MNISTDDPMPipeline):
    """
    Class-conditional inpainting with RePaint (Lugmayr et al., 2022): the pixels a mask marks white are generated so
    that the whole image becomes a digit of the requested class; the other pixels are kept exactly as given.

    Built from the same components as [`MNISTDDPMPipeline`]: `MNISTDDPMInpaintPipeline.from_pipe(pipe)` (or
    `MNISTDDPMInpaintPipeline(**pipe.components)`), or `MNISTDDPMInpaintPipeline.from_pretrained` of the same folder
    or repo. RePaint combines the reverse step and the forward jump of an [`MNISTDDPMScheduler`]: a model that stores
    another diffusers solver (a fast sampler) inpaints with the `MNISTDDPMScheduler` of that solver's noise schedule.
    """

    # RePaint's number of steps (T = 250 in the paper), when neither the call nor the config names any.
    fallback_num_inference_steps = 250

    def prepare_image_and_mask(
        self, image, mask_image, num_labels: int, batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Check `image` and `mask_image` (see [`~MNISTDDPMInpaintPipeline.__call__`]) and give one of each per image of
        the call: one for all labels, or one per label, repeated for the images of that label.

        Returns:
            `tuple[torch.Tensor, torch.Tensor]`: x_0 of the known region, in [-1, 1], and the mask, 1 where pixels are
            generated and 0 where they are kept; both float32 of shape (batch_size, 1, 28, 28) on the execution
            device.
        """
        known = digits_to_unit_range(image, "image", refuse_colour=True) * 2 - 1
        mask = (digits_to_unit_range(mask_image, "mask_image", refuse_colour=True) >= 0.5).float()
        if (mask.flatten(1).sum(1) == 0).any():
            raise ValueError(
                "`mask_image` is all black: there is nothing to generate. White (≥ 0.5, or ≥ 128 in a uint8 or PIL "
                "mask, which is read in 0–255) marks the pixels to fill; multiply a 0/1 uint8 mask by 255, or pass "
                "it as bool or float."
            )
        if (mask.flatten(1).sum(1) == IMAGE_SIZE * IMAGE_SIZE).any():
            raise ValueError("`mask_image` is all white: nothing of `image` is kept; use MNISTDDPMPipeline instead.")
        for name, tensor in (("image", known), ("mask_image", mask)):
            if len(tensor) not in (1, num_labels):
                raise ValueError(f"Got {len(tensor)} `{name}`s for {num_labels} labels: pass one, or one per label.")
        device = self._execution_device
        known = known.to(device=device, dtype=torch.float32).repeat_interleave(batch_size // len(known), dim=0)
        mask = mask.to(device=device, dtype=torch.float32).repeat_interleave(batch_size // len(mask), dim=0)
        return known, mask

    @torch.no_grad()
    def __call__(
        self,
        image,
        mask_image,
        labels: int | Sequence[int] | torch.Tensor,
        num_images_per_label: int = 1,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
        jump_length: int = 10,
        jump_n_sample: int = 5,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ) -> ImagePipelineOutput | tuple:
        """
        Complete `image` where `mask_image` is white.

        Args:
            image (`PIL.Image`, a list of them, `np.ndarray` or `torch.Tensor`): one 28×28 grey digit (white on
                black), completed as every entry of `labels`, or one digit per entry of `labels`; an array or tensor
                (uint8 in 0–255, or float in [0, 1]) is shaped (28, 28), (N, 1, 28, 28) or (N, 28, 28), but not
                (3, 28, 28) or (4, 28, 28), which could be one colour image.
            mask_image (same forms as `image`): white (≥ 0.5, so 255 in a uint8 mask) where pixels are to be
                generated, black where `image` is kept; one mask for all, or one per entry of `labels`.
            labels (`int`, `Sequence[int]` or `torch.Tensor`): the digit(s) the completions must show, 0–9; one
                completion per entry, in order.
            num_images_per_label (`int`, *optional*, defaults to 1): completions per entry of `labels`.
            num_inference_steps (`int`, *optional*): the steps of the (strided) DDPM schedule that RePaint walks,
                before resampling: the model runs about `num_inference_steps × jump_n_sample` times. Defaults to the
                pipeline's `default_num_inference_steps`, the steps generation takes, or else 250 (RePaint's T).
            guidance_scale (`float`, *optional*): classifier-free guidance weight; the pipeline's default if None.
            guidance_interval (`tuple[float, float]`, *optional*): `(t_low, t_high)`: guide only the denoising steps
                with t_low ≤ t ≤ t_high, as in [`MNISTDDPMPipeline.__call__`]; the pipeline's default if None.
            jump_length (`int`, *optional*, defaults to 10): steps between RePaint's jumps back, and their length.
            jump_n_sample (`int`, *optional*, defaults to 5): how often each stretch of `jump_length` steps is run
                (1: no resampling, plain replacement of the known region).
            generator, output_type, return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs: as in
                [`MNISTDDPMPipeline.__call__`]; the callback runs after every denoising step, with the index of the
                move among all of RePaint's moves (steps down and jumps back).

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the completed digits.
        """
        scheduler = self.scheduler
        # By class name, not `isinstance`: a pipeline loaded as remote code carries its own copy of the class.
        if MNISTDDPMScheduler.__name__ not in {base.__name__ for base in type(scheduler).__mro__}:
            if self.config.get("distilled_guidance_scale") is not None or not hasattr(scheduler, "betas") \
                    or hasattr(scheduler, "get_scalings_for_boundary_condition_discrete"):
                raise ValueError(
                    f"Inpainting needs a DDPM (RePaint combines its reverse step with the forward jump), got a "
                    f"{type(scheduler).__name__}, a distilled student's or another model's sampler."
                )
            # A model that stores a fast solver as its sampler is the same DDPM: RePaint runs the DDPM of its noise
            # schedule, at RePaint's own number of steps (the stored one was chosen for the solver).
            scheduler = MNISTDDPMScheduler.from_config(scheduler.config)
            if num_inference_steps is None:
                num_inference_steps = self.fallback_num_inference_steps
        jump_length = check_positive_integer("jump_length", jump_length)
        jump_n_sample = check_positive_integer("jump_n_sample", jump_n_sample)
        class_labels, num_inference_steps, generator = self.check_inputs(
            labels, num_images_per_label, num_inference_steps, guidance_scale, guidance_interval, output_type,
            generator, callback_on_step_end, callback_on_step_end_tensor_inputs,
        )
        known, mask = self.prepare_image_and_mask(
            image, mask_image, len(class_labels) // num_images_per_label, len(class_labels)
        )

        config, device = self.unet.config, self._execution_device
        shape = (len(class_labels), config.in_channels, config.sample_size, config.sample_size)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        scheduler.set_timesteps(num_inference_steps, device=device)
        schedule = repaint_schedule(scheduler.timesteps.tolist(), jump_length, jump_n_sample)
        self._num_timesteps = len(schedule)  # the callback's step index counts RePaint's moves
        dtype = self.unet.dtype  # read once: see `predict_noise`

        with self.progress_bar(total=len(schedule)) as progress_bar:
            for i, (t, t_next) in enumerate(schedule):
                if self.interrupt:
                    continue
                if t_next < t:  # denoise: unknown pixels from the model's step, known ones from q(x_t_next | x_0)
                    # Read at every step: a callback may have changed the guidance of the steps that follow.
                    step_scale = step_guidance_scale(t, self._guidance_scale, self._guidance_interval)
                    noise_pred = self.predict_noise(latents, t, class_labels, step_scale, dtype, i, len(schedule),
                                                    self._call_guider)
                    generated = scheduler.step(noise_pred, t, latents, generator=generator).prev_sample
                    if t_next == -1:  # the last step lands on x_0: the kept pixels exactly as given
                        known_next = known
                    else:
                        noise = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
                        known_next = scheduler.renoise(known, noise, -1, t_next)
                    latents = mask * generated + (1 - mask) * known_next
                    latents = self.run_callback(callback_on_step_end, i, t, latents, callback_on_step_end_tensor_inputs)
                else:  # jump back: re-noise the whole image, q(x_t_next | x_t)
                    noise = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
                    latents = scheduler.renoise(latents, noise, t, t_next)
                progress_bar.update()

        return self.finish(latents, output_type, return_dict)
