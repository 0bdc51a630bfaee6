"""What identifies a trained model, whichever way it was named or downloaded: a hash of its weights and config.

A cached evaluation, a sweep that grows over several runs and a resumed distillation must each refuse to mix two
models. A folder path or a Hub repo id says nothing about that (two repo ids can hold the same files, one folder can
be retrained), so they compare these hashes instead.
"""

import hashlib
import json

import torch

# Config entries that record where or with what a component was saved, not what it computes.
PROVENANCE_KEYS = {"_diffusers_version", "_name_or_path", "_use_default_values"}


def weights_sha256(model: torch.nn.Module) -> str:
    """
    The sha256 of `model`'s weights and buffers: every entry's name, shape and value as float32, in state-dict order.
    As float32, so that the hash is that of the values, not of the dtype they are held in: weights stored in bf16 hash
    alike loaded as bf16 or as float32. (Float32 weights loaded as bf16 are rounded, and hash differently: hash them
    as loaded in float32.)
    """
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def config_sha256(config: dict) -> str:
    """The sha256 of a component's config (its class included), with the entries that only record provenance left out."""
    kept = {name: value for name, value in dict(config).items() if name not in PROVENANCE_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def model_sha256(unet: torch.nn.Module, scheduler) -> str:
    """
    The identity of a diffusion model: the hash of its UNet's weights (see [`weights_sha256`]) and architecture (its
    config), and of the noise schedule it was trained with (its scheduler's config).
    """
    parts = (weights_sha256(unet), config_sha256(unet.config), config_sha256(scheduler.config))
    return hashlib.sha256(":".join(parts).encode()).hexdigest()


def pipeline_sha256(pipe) -> str:
    """
    The identity of what a pipeline draws with: [`model_sha256`] of its UNet and scheduler and, when it has them, the
    config of its guider and the weights and config of its guidance UNet (autoguidance). A pipeline without either
    keeps its model's identity, so that results keyed by it before guiders existed stay valid.
    """
    identity = model_sha256(pipe.unet, pipe.scheduler)
    guider, guidance_unet = getattr(pipe, "guider", None), getattr(pipe, "guidance_unet", None)
    extras = ([] if guider is None else [f"guider {config_sha256(guider.config)}"]) + (
        [] if guidance_unet is None else
        [f"guidance_unet {weights_sha256(guidance_unet)} {config_sha256(guidance_unet.config)}"])
    return identity if not extras else hashlib.sha256(":".join([identity, *extras]).encode()).hexdigest()
