"""
The digits an evaluation scores: the model loaded and identified, every configuration checked before the first
image, and balanced sets drawn batch by batch (each batch its own seed, kept in the cache).
"""

import itertools
import time
from pathlib import Path

import torch

from ...data import MNISTDataError, load_mnist
from ...pipeline_mnist_ddpm import MNISTDDPMPipeline
from ...unet_mnist import ClassConditionedUNet
from ..fingerprint import pipeline_sha256
from ..samplers import every_step_if_all, use_sampler
from .cache import kept


class SetupError(ValueError):
    """A model that cannot be loaded, or a setting that it (or the evaluation a run is appended to) refuses: found
    before any image is drawn, and a usage error on the command line."""


def load_data(data_dir: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """
    [`data.load_mnist`] for an evaluation: a split that is missing (and cannot be downloaded) or corrupt is a
    [`SetupError`] naming `data_dir`, found before any image is drawn.
    """
    try:
        return load_mnist(data_dir, split)
    except MNISTDataError as error:
        raise SetupError(f"--data_dir {data_dir}: {error}") from error


def load_pipeline(model_dir: str, torch_dtype: torch.dtype = torch.float32,
                  guidance_unet: str | None = None) -> tuple[MNISTDDPMPipeline, str]:
    """
    The pipeline of `model_dir` (a folder or Hub repo id) with its UNet in `torch_dtype` and, for autoguidance, the
    weaker `ClassConditionedUNet` of the folder `guidance_unet` as its guidance UNet; and its identity
    ([`fingerprint.pipeline_sha256`]: with the guider and guidance UNet it holds), hashed from the weights as stored
    in float32, whatever dtype the evaluation runs in.
    """
    def load(dtype: torch.dtype) -> MNISTDDPMPipeline:
        extra = {} if dtype == torch.float32 else {"torch_dtype": dtype}
        try:
            if guidance_unet is not None:
                guide = ClassConditionedUNet.from_pretrained(guidance_unet)
                extra["guidance_unet"] = guide if dtype == torch.float32 else guide.to(dtype)
        except (OSError, ValueError) as error:
            raise SetupError(f"--guidance_unet {guidance_unet} cannot be loaded as a ClassConditionedUNet: {error}") \
                from error
        try:
            return MNISTDDPMPipeline.from_pretrained(model_dir, **extra)
        except (OSError, ValueError) as error:  # a missing folder, one without model_index.json, another pipeline
            raise SetupError(f"{model_dir} cannot be loaded as a pipeline: {error}") from error

    pipe = load(torch.float32)
    identity = pipeline_sha256(pipe)
    if torch_dtype != torch.float32:
        pipe = load(torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe, identity


def plan_runs(pipe: MNISTDDPMPipeline, samplers: list[str], num_inference_steps: list[int | None],
              guidance_scales: list[float | None], guidance_intervals: list) -> list[dict]:
    """
    Every configuration of a sweep (sampler × steps × guidance scale × guidance interval), resolved and checked
    against the model as a call would check it, before any image is drawn, so that a bad value late in a list cannot
    throw away the finished runs before it.

    Returns:
        `list[dict]`: one dict per run: sampler, the steps, guidance scale and guidance interval it uses (None:
        every step is guided).

    Raises:
        [`SetupError`]: naming every configuration the model refuses, and why.
    """
    own_scheduler = pipe.scheduler
    runs, problems = [], []
    for sampler in samplers:
        pipe.scheduler = own_scheduler  # each sampler is built from the model's own scheduler
        default_steps = use_sampler(pipe, sampler)
        every_step = (0, pipe.scheduler.config.num_train_timesteps)
        for steps, guidance_scale, guidance_interval in itertools.product(num_inference_steps, guidance_scales,
                                                                          guidance_intervals):
            try:
                steps, guidance_scale, guidance_interval = pipe.resolve_defaults(
                    default_steps if steps is None else steps, guidance_scale,
                    every_step_if_all(guidance_interval, pipe),
                )
            except ValueError as error:
                problems.append(f"{sampler}: {error}")
                continue
            runs.append({"sampler": sampler, "num_inference_steps": steps, "guidance_scale": guidance_scale,
                         "guidance_interval": None if guidance_interval == every_step else guidance_interval})
    pipe.scheduler = own_scheduler
    if problems:
        raise SetupError(" ".join(dict.fromkeys(problems)))
    return runs


def generate_balanced(pipe: MNISTDDPMPipeline, samples_per_digit: int, batch_size: int, seed: int,
                      num_inference_steps: int | None, guidance_scale: float | None,
                      guidance_interval: tuple[float, float] | None = None,
                      cache_dir: Path | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """
    `samples_per_digit` images of each digit 0–9, as a float tensor (N, 1, 28, 28) in [0, 1], their labels, and the
    seconds spent generating them.

    Batch `start` is drawn with the seed `seed + start`, so batches are independent: with `cache_dir`, each finished
    batch is kept there with its generation time (written atomically), and a rerun after a kill generates only the
    missing ones; the seconds returned are still those of every batch.
    """
    labels = torch.arange(10).repeat_interleave(samples_per_digit)
    images, seconds = [], 0.0
    for start in range(0, len(labels), batch_size):
        def generate_batch() -> dict:
            started = time.perf_counter()
            batch_images = pipe(labels=labels[start : start + batch_size], num_inference_steps=num_inference_steps,
                                guidance_scale=guidance_scale, guidance_interval=guidance_interval,
                                generator=torch.Generator().manual_seed(seed + start), output_type="pt").images.cpu()
            return {"images": batch_images, "seconds": time.perf_counter() - started}

        batch_result = kept(None if cache_dir is None else cache_dir / f"batch-{start:06d}.pt", generate_batch)
        images.append(batch_result["images"])
        seconds += batch_result["seconds"]
    return torch.cat(images), labels, seconds
