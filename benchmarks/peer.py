# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""
The peer of the benchmark (`benchmark.py`) and of `train_peer.py`: diffusers' own class-conditional `UNet2DModel`
with the widths of our default `ClassConditionedUNet`, driven by diffusers' `DDPMScheduler` in the plain DDPM loop with
`MNISTDDPMPipeline`'s classifier-free guidance; and the FLOP formulas its attention kernel needs.
"""

from collections.abc import Callable

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.utils.pil_utils import numpy_to_pil
from diffusers.utils.torch_utils import randn_tensor
from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

NUM_TRAIN_TIMESTEPS = 1000
NULL_LABEL = 10
GUIDANCE_SCALE = 2.0

# diffusers' UNet2DModel with the widths of our default ClassConditionedUNet, class-conditioned with 10 digits + the
# null label.
PEER_UNET_CONFIG = dict(
    sample_size=28,
    in_channels=1,
    out_channels=1,
    block_out_channels=(32, 64, 96),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    num_class_embeds=11,
    attention_head_dim=32,
)


# FlopCounterMode has no formula for the CPU flash-attention kernel that the peer's attention runs on; it does the
# same matmuls as the other scaled-dot-product-attention kernels, so it gets their formulas.
def cpu_flash_attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def cpu_flash_attention_backward_flop(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


CPU_SDPA_FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash_attention_flop,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_flash_attention_backward_flop,
}



class PeerPipeline:
    """
    The plain DDPM sampling loop around diffusers' `UNet2DModel` and `DDPMScheduler`, with `MNISTDDPMPipeline`'s
    classifier-free guidance (conditional and unconditional passes as one batch, null label 10) and the arguments
    of its call that the benchmark uses.
    """

    def __init__(self, unet: UNet2DModel, scheduler: DDPMScheduler):
        self.unet = unet
        self.scheduler = scheduler

    @torch.inference_mode()
    def __call__(
        self,
        labels: list[int],
        num_images_per_label: int = 1,
        guidance_scale: float = GUIDANCE_SCALE,
        generator: torch.Generator | None = None,
        callback_on_step_end: Callable | None = None,
    ) -> list:
        class_labels = torch.tensor(labels).repeat_interleave(num_images_per_label)
        class_labels = torch.cat([class_labels, torch.full_like(class_labels, NULL_LABEL)])
        config = self.unet.config
        latents = randn_tensor(
            (len(labels) * num_images_per_label, config.in_channels, config.sample_size, config.sample_size),
            generator=generator,
        )
        self.scheduler.set_timesteps(NUM_TRAIN_TIMESTEPS)
        for i, t in enumerate(self.scheduler.timesteps):
            noise_pred = self.unet(torch.cat([latents, latents]), t, class_labels=class_labels).sample
            noise_cond, noise_uncond = noise_pred.chunk(2)
            noise_pred = noise_uncond + guidance_scale * (noise_cond - noise_uncond)
            latents = self.scheduler.step(noise_pred, t, latents, generator=generator).prev_sample
            if callback_on_step_end is not None:
                callback_on_step_end(self, i, t, {"latents": latents})
        return numpy_to_pil((latents / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy())
