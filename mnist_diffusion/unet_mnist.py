# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""A small class-conditioned UNet ε_θ(x_t, t, y) for 28×28 digits, as a diffusers `ModelMixin`.

This file imports only torch and diffusers, so it can be copied verbatim into a Hub repo and loaded with
`trust_remote_code=True` by someone who does not have `mnist_diffusion` installed.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn


@dataclass
class ClassConditionedUNetOutput(BaseOutput):
    """
    Args:
        sample (`torch.Tensor` of shape `(batch_size, out_channels, height, width)`): the model's prediction
            (the noise ε, for the default `epsilon` parameterisation).
    """

    sample: torch.Tensor


def sinusoidal_embedding(timesteps: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """The Transformer's position encoding applied to the timestep: [sin(t·ω_i), cos(t·ω_i)], ω_i = 10000^(−i/d)."""
    angles = timesteps.float()[:, None] * frequencies[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class ResnetBlock(nn.Module):
    """GroupNorm → SiLU → 3×3 conv, plus the time-and-label embedding, twice, around a residual connection."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, norm_num_groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_num_groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embedding_proj = nn.Linear(embedding_dim, out_channels)
        self.norm2 = nn.GroupNorm(norm_num_groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, hidden_states: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(hidden_states)))
        h = h + self.embedding_proj(embedding)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(hidden_states) + h


class AttentionBlock(nn.Module):
    """
    Multi-head self-attention over the pixels of a feature map. The time-and-label embedding is appended as one
    more key/value token, so attention can route information by class and noise level as well as by position.
    """

    def __init__(self, channels: int, embedding_dim: int, attention_head_dim: int, norm_num_groups: int):
        super().__init__()
        if channels % attention_head_dim:
            raise ValueError(f"channels={channels} must be a multiple of attention_head_dim={attention_head_dim}.")
        self.num_heads = channels // attention_head_dim
        self.scale = attention_head_dim**-0.5
        self.norm = nn.GroupNorm(norm_num_groups, channels)
        self.embedding_token = nn.Linear(embedding_dim, channels)
        self.to_q = nn.Linear(channels, channels)
        self.to_kv = nn.Linear(channels, 2 * channels)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, hidden_states: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = hidden_states.shape
        tokens = self.norm(hidden_states).flatten(2).transpose(1, 2)  # (B, H·W, C)
        context = torch.cat([tokens, self.embedding_token(embedding)[:, None, :]], dim=1)

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, heads, tokens, head_dim)

        key, value = self.to_kv(context).chunk(2, dim=-1)
        # Explicit softmax(QKᵀ/√d)V: with ~50 tokens it is a few small matmuls, and its backward on CPU is several
        # times faster than the fused flash-attention kernel's.
        query = heads(self.to_q(tokens)) * self.scale
        weights = torch.softmax(query @ heads(key).transpose(-1, -2), dim=-1)
        attended = weights @ heads(value)
        attended = self.to_out(attended.transpose(1, 2).flatten(2))
        return hidden_states + attended.transpose(1, 2).reshape(batch, channels, height, width)


class ConditionedBlock(nn.Module):
    """A residual block, followed by self-attention at the resolutions that have it."""

    def __init__(self, in_channels, out_channels, embedding_dim, norm_num_groups, dropout, attention_head_dim, attend):
        super().__init__()
        self.resnet = ResnetBlock(in_channels, out_channels, embedding_dim, norm_num_groups, dropout)
        self.attention = (
            AttentionBlock(out_channels, embedding_dim, attention_head_dim, norm_num_groups) if attend else None
        )

    def forward(self, hidden_states: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        hidden_states = self.resnet(hidden_states, embedding)
        if self.attention is not None:
            hidden_states = self.attention(hidden_states, embedding)
        return hidden_states


def run_block(owner: nn.Module, block: nn.Module, hidden_states: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """`block(hidden_states, embedding)`, recomputed in the backward pass while `owner` has gradient checkpointing on
    (`ModelMixin.enable_gradient_checkpointing` sets `gradient_checkpointing` on every module that has the attribute)."""
    if torch.is_grad_enabled() and owner.gradient_checkpointing:
        return owner._gradient_checkpointing_func(block, hidden_states, embedding)
    return block(hidden_states, embedding)


class Stage(nn.Module):
    """
    The blocks of one resolution, and the convolution that moves to the next one (none at the last). The UNet calls
    each stage's `forward`, never its parts directly: hooks sit on a module's forward (block-level group offloading
    onloads a whole stage there), so a part called from outside would run on offloaded placeholder weights.
    """

    def __init__(self, upward: bool):
        super().__init__()
        self.upward = upward
        self.blocks = nn.ModuleList()
        self.resample = None
        self.gradient_checkpointing = False

    def forward(
        self, hidden_states: torch.Tensor, embedding: torch.Tensor, skips: tuple[torch.Tensor, ...] = ()
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """
        On the way down: the blocks, then the downsampler; returns the output and the skip connections it made
        (every block's output and the downsampler's). On the way up: each block takes the next of `skips` (one per
        block, the nearest first) concatenated to its input, then the upsampler; returns the output and no skips.
        Skips travel as arguments and return values, not as a list changed in place: a hook that moves a module's
        inputs to another device passes it copies.
        """
        made = []
        for index, block in enumerate(self.blocks):
            if self.upward:
                hidden_states = torch.cat([hidden_states, skips[index]], dim=1)
            hidden_states = run_block(self, block, hidden_states, embedding)
            made.append(hidden_states)
        if self.resample is not None:
            hidden_states = self.resample(hidden_states)
            made.append(hidden_states)
        return hidden_states, () if self.upward else tuple(made)


class ClassConditionedUNet(ModelMixin, ConfigMixin):
    """
    The noise predictor ε_θ(x_t, t, y) of a class-conditional DDPM: a UNet over 28×28 → 14 → 7 feature maps with a
    self-attention bottleneck and skip connections. The timestep enters as a sinusoidal embedding followed by an
    MLP, the class label as a learned embedding with one extra "null" entry (index `num_classes`) used for
    classifier-free guidance; their sum conditions every residual block and every attention block.

    Args:
        sample_size (`int`, defaults to 28): height and width of the images.
        in_channels (`int`, defaults to 1): channels of the input image.
        out_channels (`int`, defaults to 1): channels of the prediction.
        num_classes (`int`, defaults to 10): number of class labels; label `num_classes` is the null label.
        block_out_channels (`tuple[int]`, defaults to `(32, 64, 96)`): width at each resolution, from the input
            resolution down; one halving of the resolution between consecutive entries.
        layers_per_block (`int`, defaults to 1): residual blocks per resolution on the way down (one more on the
            way up, which also takes the skip connection of the downsampler).
        attention_resolutions (`tuple[int]`, defaults to `(7,)`): feature-map sizes whose blocks have
            self-attention, in addition to the bottleneck, which always has it.
        attention_head_dim (`int`, defaults to 32): channels per attention head.
        norm_num_groups (`int`, defaults to 8): groups of every GroupNorm.
        time_embedding_dim (`int`, *optional*): width of the time-and-label embedding; 4 × block_out_channels[0]
            when not given.
        dropout (`float`, defaults to 0.0): dropout inside residual blocks.
    """

    _supports_gradient_checkpointing = True
    _skip_layerwise_casting_patterns = ["norm"]

    @register_to_config
    def __init__(
        self,
        sample_size: int = 28,
        in_channels: int = 1,
        out_channels: int = 1,
        num_classes: int = 10,
        block_out_channels: tuple[int, ...] = (32, 64, 96),
        layers_per_block: int = 1,
        attention_resolutions: tuple[int, ...] = (7,),
        attention_head_dim: int = 32,
        norm_num_groups: int = 8,
        time_embedding_dim: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        downsampling = 2 ** (len(block_out_channels) - 1)
        if sample_size % downsampling:
            raise ValueError(
                f"sample_size={sample_size} must be divisible by {downsampling} to go through "
                f"{len(block_out_channels)} resolutions."
            )
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}.")
        embedding_dim = time_embedding_dim or 4 * block_out_channels[0]
        block_kwargs = dict(
            embedding_dim=embedding_dim,
            norm_num_groups=norm_num_groups,
            dropout=dropout,
            attention_head_dim=attention_head_dim,
        )

        half = block_out_channels[0] // 2
        self.register_buffer(
            "frequencies", torch.exp(-math.log(10000.0) * torch.arange(half) / half), persistent=False
        )
        self.time_embedding = nn.Sequential(
            nn.Linear(2 * half, embedding_dim), nn.SiLU(), nn.Linear(embedding_dim, embedding_dim)
        )
        self.class_embedding = nn.Embedding(num_classes + 1, embedding_dim)
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)

        self.down_stages = nn.ModuleList()
        skip_channels = [block_out_channels[0]]
        channels, resolution = block_out_channels[0], sample_size
        for level, level_channels in enumerate(block_out_channels):
            stage = Stage(upward=False)
            for _ in range(layers_per_block):
                attend = resolution in attention_resolutions
                stage.blocks.append(ConditionedBlock(channels, level_channels, attend=attend, **block_kwargs))
                channels = level_channels
                skip_channels.append(channels)
            if level < len(block_out_channels) - 1:
                stage.resample = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
                skip_channels.append(channels)
                resolution //= 2
            self.down_stages.append(stage)

        self.mid_blocks = nn.ModuleList(
            [
                ConditionedBlock(channels, channels, attend=True, **block_kwargs),
                ConditionedBlock(channels, channels, attend=False, **block_kwargs),
            ]
        )

        self.up_stages = nn.ModuleList()
        for level, level_channels in reversed(list(enumerate(block_out_channels))):
            stage = Stage(upward=True)
            for _ in range(layers_per_block + 1):
                attend = resolution in attention_resolutions
                in_channels_with_skip = channels + skip_channels.pop()
                stage.blocks.append(
                    ConditionedBlock(in_channels_with_skip, level_channels, attend=attend, **block_kwargs)
                )
                channels = level_channels
            if level > 0:
                # A 2×2 transposed convolution with stride 2 (the up-convolution of the original UNet) doubles the
                # resolution and narrows to the next level's width, all computed at the low resolution: a ninth of
                # the cost of upsampling first and convolving at the high resolution.
                stage.resample = nn.ConvTranspose2d(channels, block_out_channels[level - 1], 2, stride=2)
                channels = block_out_channels[level - 1]
                resolution *= 2
            self.up_stages.append(stage)

        self.norm_out = nn.GroupNorm(norm_num_groups, channels)
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.gradient_checkpointing = False

    @property
    def null_class_label(self) -> int:
        """The label index that means "no class", for the unconditional pass of classifier-free guidance."""
        return self.config.num_classes

    def _check_inputs(self, sample: torch.Tensor, timestep, class_labels: torch.Tensor) -> torch.Tensor:
        downsampling = 2 ** (len(self.config.block_out_channels) - 1)
        if (
            sample.ndim != 4
            or sample.shape[1] != self.config.in_channels
            or sample.shape[2] % downsampling
            or sample.shape[3] % downsampling
        ):
            raise ValueError(
                f"`sample` must have shape (batch, {self.config.in_channels}, height, width) with height and width "
                f"divisible by {downsampling} (natively {self.config.sample_size}×{self.config.sample_size}), "
                f"got {tuple(sample.shape)}."
            )
        batch = sample.shape[0]
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], device=sample.device)
        if timestep.ndim > 1 or timestep.numel() not in (1, batch):
            raise ValueError(
                f"`timestep` must be a number, a 0-d tensor or a 1-d tensor of length 1 or {batch}, "
                f"got shape {tuple(timestep.shape)}."
            )
        if not torch.is_tensor(class_labels) or class_labels.ndim != 1 or len(class_labels) != batch:
            raise ValueError(
                f"`class_labels` must be a 1-d integer tensor with one label per sample ({batch}), got {class_labels!r}."
            )
        if class_labels.is_floating_point() or class_labels.is_complex() or class_labels.dtype == torch.bool:
            raise ValueError(f"`class_labels` must be an integer tensor, got dtype {class_labels.dtype}.")
        # Shapes and dtypes only: they cost nothing. The labels' values are checked where they enter (the pipeline's
        # `labels`, the data set's label file), once per call: reading them here would make the host wait for the
        # device at every denoising step and training batch, as diffusers' own UNet2DModel does not.
        return timestep.reshape(-1).expand(batch)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        class_labels: torch.Tensor,
        return_dict: bool = True,
    ) -> ClassConditionedUNetOutput | tuple:
        """
        Predict the noise in `sample`.

        Args:
            sample (`torch.Tensor` of shape `(batch_size, in_channels, height, width)`): the noisy images x_t.
            timestep (`int`, `float` or `torch.Tensor`): t, one for the whole batch (a number or a 0-d tensor) or
                one per image (a 1-d tensor).
            class_labels (`torch.Tensor` of shape `(batch_size,)`): integer labels in [0, num_classes]; the value
                `num_classes` is the null label. Their values are not checked here (see `_check_inputs`).
            return_dict (`bool`, defaults to `True`): return a [`ClassConditionedUNetOutput`] instead of a tuple.

        Returns:
            [`ClassConditionedUNetOutput`] or `tuple`: the prediction, with the shape of `sample`.
        """
        timesteps = self._check_inputs(sample, timestep, class_labels)
        time_embedding = self.time_embedding(sinusoidal_embedding(timesteps, self.frequencies).to(sample.dtype))
        embedding = F.silu(time_embedding + self.class_embedding(class_labels))

        hidden_states = self.conv_in(sample)
        skips = [hidden_states]
        for stage in self.down_stages:
            hidden_states, made = stage(hidden_states, embedding)
            skips.extend(made)

        for block in self.mid_blocks:
            hidden_states = run_block(self, block, hidden_states, embedding)

        for stage in self.up_stages:
            taken = tuple(skips.pop() for _ in stage.blocks)  # the nearest skip first
            hidden_states, _ = stage(hidden_states, embedding, taken)

        prediction = self.conv_out(F.silu(self.norm_out(hidden_states)))
        if not return_dict:
            return (prediction,)
        return ClassConditionedUNetOutput(sample=prediction)
