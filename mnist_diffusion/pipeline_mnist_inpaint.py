# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""`MNISTDDPMInpaintPipeline`: complete a partly hidden digit as a digit of the class you ask for.

The method is RePaint (Lugmayr et al., "RePaint: Inpainting using Denoising Diffusion Probabilistic Models",
CVPR 2022), which needs no retraining: at every reverse step the known pixels are drawn from the forward process
q(x_{t−1} | x_0) of the given image and the unknown ones from the model's reverse step, and every `jump_length`
steps the chain jumps back by re-noising (`jump_n_sample` times in all) so that the two regions come to agree.
"""

import numpy as np
import torch
from diffusers import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from .pipeline_mnist_ddpm import MNISTDDPMPipeline, check_positive_integer, step_guidance_scale
from .scheduling_mnist_ddpm import MNISTDDPMScheduler


def repaint_walk(num_levels: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """
    The order in which RePaint visits the noise levels of a schedule with `num_levels` reverse steps.

    Level `num_levels` is x_T and level 0 is x_0. The walk lists the level reached after each move: one lower for a
    denoising step, one higher for a re-noising step. Every `jump_length` levels (above the last `jump_length`) the
    walk climbs back `jump_length` levels, `jump_n_sample − 1` times.

    Returns:
        `list[int]`: the levels, starting with `num_levels − 1` (after the first denoising step) and ending with 0.
    """
    jumps_left = {level: jump_n_sample - 1 for level in range(0, num_levels - jump_length, jump_length)}
    level, walk = num_levels, []
    while level > 0:
        level -= 1
        walk.append(level)
        if jumps_left.get(level, 0) > 0:
            jumps_left[level] -= 1
            for _ in range(jump_length):
                level += 1
                walk.append(level)
    return walk


def to_unit_tensor(value, name: str, size: int) -> torch.Tensor:
    """
    Grey images as a float tensor (N, 1, size, size) in [0, 1], from a PIL image or a list of them, or from a numpy
    array or a tensor (uint8 in 0–255, or float in [0, 1]) shaped (H, W), (N, H, W) or (N, 1, H, W). (3, H, W) and
    (4, H, W) are refused: they may as well be one RGB or RGBA image in torch's channels-first layout.
    """
    if isinstance(value, Image.Image):
        value = [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Image.Image) for v in value):
        value = np.stack([np.asarray(v.convert("L")) for v in value])[:, None]
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value.astype(np.float32) / 255.0 if value.dtype == np.uint8 else value.astype(np.float32))
    if not torch.is_tensor(value):
        raise ValueError(f"`{name}` must be a PIL image (or a list of them), a numpy array or a tensor, "
                         f"got {type(value).__name__}.")
    given_shape = tuple(value.shape)
    if value.ndim == 3 and value.shape[0] in (3, 4):
        raise ValueError(
            f"`{name}` of shape {given_shape} is ambiguous: {given_shape[0]} grey images, or one colour image? Pass "
            f"grey images as (N, 1, {size}, {size}) (`{name}[:, None]`), and convert colour images to grey first."
        )
    value = value.float() / 255.0 if value.dtype == torch.uint8 else value.float()
    if value.ndim == 2:
        value = value[None]
    if value.ndim == 3:
        value = value[:, None]
    if value.ndim != 4 or value.shape[1:] != (1, size, size):
        raise ValueError(
            f"`{name}` must be {size}×{size} grey images, shaped ({size}, {size}), (N, {size}, {size}) or "
            f"(N, 1, {size}, {size}); got shape {given_shape}. Resize first: nothing is resized silently."
        )
    if not torch.isfinite(value).all():
        raise ValueError(f"`{name}` holds NaN or infinite values; values must lie in [0, 1] (or 0–255 for uint8).")
    if value.min() < 0 or value.max() > 1:
        raise ValueError(f"`{name}` values must lie in [0, 1] (or 0–255 for uint8), got {value.min()}–{value.max()}.")
    return value


class MNISTDDPMInpaintPipeline(MNISTDDPMPipeline):
    """
    Class-conditional inpainting with RePaint (Lugmayr et al., 2022): the pixels a mask marks white are generated so
    that the whole image becomes a digit of the requested class; the other pixels are kept exactly as given.

    Built from the same components as [`MNISTDDPMPipeline`]: `MNISTDDPMInpaintPipeline.from_pipe(pipe)` (or
    `MNISTDDPMInpaintPipeline(**pipe.components)`), or `MNISTDDPMInpaintPipeline.from_pretrained` of the same folder
    or repo. The scheduler must be an [`MNISTDDPMScheduler`], whose reverse step and forward jump RePaint combines.
    """

    @torch.no_grad()
    def __call__(
        self,
        image,
        mask_image,
        labels,
        num_images_per_label: int = 1,
        num_inference_steps: int = 250,
        guidance_scale: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
        jump_length: int = 10,
        jump_n_sample: int = 5,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
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
            labels (`int`, `list[int]` or `torch.Tensor`): the digit(s) the completions must show, 0–9; one
                completion per entry, in order.
            num_images_per_label (`int`, defaults to 1): completions per entry of `labels`.
            num_inference_steps (`int`, defaults to 250): reverse steps of the (strided) DDPM schedule, before
                resampling; the model runs about `num_inference_steps × jump_n_sample` times.
            guidance_scale (`float`, *optional*): classifier-free guidance weight; the pipeline's default if None.
            guidance_interval (`tuple[float, float]`, *optional*): `(t_low, t_high)`: guide only the denoising steps
                with t_low ≤ t ≤ t_high, as in [`MNISTDDPMPipeline.__call__`]; the pipeline's default if None.
            jump_length (`int`, defaults to 10): steps between RePaint's jumps back, and their length.
            jump_n_sample (`int`, defaults to 5): how often each stretch of `jump_length` steps is run (1: no
                resampling, plain replacement of the known region).
            generator, output_type, return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs: as in
                [`MNISTDDPMPipeline.__call__`]; the callback runs after every denoising step.

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the completed digits.
        """
        # By class name, not `isinstance`: a pipeline loaded as remote code carries its own copy of the class.
        if MNISTDDPMScheduler.__name__ not in {base.__name__ for base in type(self.scheduler).__mro__}:
            raise ValueError(
                f"Inpainting needs an MNISTDDPMScheduler (RePaint combines its reverse step with the forward jump), "
                f"got {type(self.scheduler).__name__}."
            )
        jump_length = check_positive_integer("jump_length", jump_length)
        jump_n_sample = check_positive_integer("jump_n_sample", jump_n_sample)
        class_labels, num_inference_steps, guidance_scale, guidance_interval, generator = self.check_inputs(
            labels, num_images_per_label, num_inference_steps, guidance_scale, guidance_interval, output_type,
            generator, callback_on_step_end, callback_on_step_end_tensor_inputs,
        )
        self._interrupt = False
        size, device, dtype = self.unet.config.sample_size, self._execution_device, torch.float32
        known = to_unit_tensor(image, "image", size) * 2 - 1  # x_0 of the known region, in [-1, 1]
        mask = (to_unit_tensor(mask_image, "mask_image", size) >= 0.5).float()
        if (mask.flatten(1).sum(1) == 0).any():
            raise ValueError(
                "`mask_image` is all black: there is nothing to generate. White (≥ 0.5, or ≥ 128 in a uint8 or PIL "
                "mask, which is read in 0–255) marks the pixels to fill; multiply a 0/1 uint8 mask by 255, or pass "
                "it as bool or float."
            )
        if (mask.flatten(1).sum(1) == size * size).any():
            raise ValueError("`mask_image` is all white: nothing of `image` is kept; use MNISTDDPMPipeline instead.")
        # One image completed as every label, or one image per label; each repeated num_images_per_label times.
        num_labels = len(class_labels) // num_images_per_label
        for name, tensor in (("image", known), ("mask_image", mask)):
            if len(tensor) not in (1, num_labels):
                raise ValueError(f"Got {len(tensor)} `{name}`s for {num_labels} labels: pass one, or one per label.")
        batch = len(class_labels)
        known = known.to(device=device, dtype=dtype).repeat_interleave(batch // len(known), dim=0)
        mask = mask.to(device=device, dtype=dtype).repeat_interleave(batch // len(mask), dim=0)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps.tolist()  # level k ≥ 1 is timesteps[n − k]; level 0 is x_0
        num_levels = len(timesteps)
        alphas_cumprod = self.scheduler.alphas_cumprod.tolist()

        def alpha_bar(level: int) -> float:
            return 1.0 if level == 0 else alphas_cumprod[timesteps[num_levels - level]]

        unet_dtype = self.unet.dtype  # read once: see `predict_noise`
        shape = (batch, self.unet.config.in_channels, size, size)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        walk = repaint_walk(num_levels, jump_length, jump_n_sample)
        level = num_levels
        with self.progress_bar(total=len(walk)) as progress_bar:
            for step_index, next_level in enumerate(walk):
                if self.interrupt:
                    continue
                if next_level < level:  # denoise: unknown pixels from the model, known ones from q(x_{t−1} | x_0)
                    t = timesteps[num_levels - level]
                    step_scale = step_guidance_scale(t, guidance_scale, guidance_interval)
                    noise_pred = self.predict_noise(latents, t, class_labels, step_scale, unet_dtype)
                    generated = self.scheduler.step(noise_pred, t, latents, generator=generator).prev_sample
                    if next_level == 0:
                        forward = known
                    else:
                        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                        forward = alpha_bar(next_level) ** 0.5 * known + (1 - alpha_bar(next_level)) ** 0.5 * noise
                    latents = mask * generated + (1 - mask) * forward
                    if callback_on_step_end is not None:
                        step_tensors = {"latents": latents}
                        latents = self.run_callback(
                            callback_on_step_end, step_index, t, step_tensors, callback_on_step_end_tensor_inputs
                        )["latents"]
                else:  # jump back: one forward step q(x_t | x_{t−1}) of the whole image
                    alpha = alpha_bar(next_level) / alpha_bar(level)
                    noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    latents = alpha**0.5 * latents + (1 - alpha) ** 0.5 * noise
                level = next_level
                progress_bar.update()

        images = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
