# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""
The input checks of `MNISTDDPMPipeline` that the rest of the package shares: each turns a value into what the pipeline
uses, or raises a `ValueError` naming the value and what is expected.

A Hub repo ships this file beside `pipeline_mnist_ddpm.py`, which imports it as `from .pipeline_mnist_ddpm_checks import
...`: diffusers' remote-code loader follows that form only, fetches the file from the pipeline file's folder, and from a
local folder copies it into one `diffusers_modules/local/` that every local repo shares. So this file imports nothing
relative itself, and its name is unlikely to meet another repo's.
"""

import inspect
import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id


def check_positive_integer(name: str, value, maximum: int | None = None) -> int:
    """
    `value` as an `int`, if it is a positive integer of any kind (`int`, `np.int64`, ...; not a bool) and at most
    `maximum`; otherwise a `ValueError` that names the argument, its value and what is expected.
    """
    expected = "a positive integer" if maximum is None else f"a positive integer, at most {maximum}"
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, numbers.Integral)
        or value < 1
        or (maximum is not None and value > maximum)
    ):
        raise ValueError(f"`{name}` must be {expected}, got {value!r}.")
    return int(value)


def is_finite_number(value) -> bool:
    """Whether `value` is a finite real number of any kind (`float`, `int`, `np.float32`, ...; not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)


def num_class_labels(unet) -> int:
    """
    The digits `unet` is conditioned on: our `ClassConditionedUNet`'s `num_classes`, or for diffusers' own
    class-conditional `UNet2DModel` its `num_class_embeds` less one, the last embedding being the null label.

    Raises:
        `ValueError`: if `unet` takes no class labels.
    """
    config = unet.config
    if config.get("num_classes") is not None:
        return config.num_classes
    if config.get("num_class_embeds"):
        return config.num_class_embeds - 1
    raise ValueError(
        f"The pipeline needs a class-conditional UNet (`num_classes`, or `num_class_embeds` = classes + 1 for the null "
        f"label); {type(unet).__name__} has neither."
    )


def null_class_label(unet) -> int:
    """The label that stands for "no class" in classifier-free guidance: the one after the digits, as in training."""
    return num_class_labels(unet)


def check_labels(labels, num_classes: int) -> list[int]:
    """
    Turn `labels` (an int, a sequence of ints such as a list, tuple or range, or a 1-d integer tensor/array) into a
    list of ints, or raise a `ValueError` that names the bad value, its index and the allowed range.
    """
    allowed = f"an int, a list of ints or a 1-d integer tensor with values in 0–{num_classes - 1}"
    if (torch.is_tensor(labels) or isinstance(labels, np.ndarray)) and labels.ndim == 0:
        labels = labels.reshape(1)  # one label as a 0-d tensor or array, e.g. `labels[i]`: as an int
    if torch.is_tensor(labels) or isinstance(labels, np.ndarray):
        if labels.ndim != 1:
            raise ValueError(f"`labels` must be {allowed}; got a {labels.ndim}-d {type(labels).__name__}: {labels!r}.")
        if labels.dtype in (torch.bool, np.bool_) or not (
            (torch.is_tensor(labels) and not labels.is_floating_point() and not labels.is_complex())
            or (isinstance(labels, np.ndarray) and np.issubdtype(labels.dtype, np.integer))
        ):
            raise ValueError(f"`labels` must be {allowed}; got dtype {labels.dtype}: {labels!r}.")
        labels = labels.tolist()
    elif isinstance(labels, numbers.Integral) and not isinstance(labels, (bool, np.bool_)):
        labels = [int(labels)]
    elif isinstance(labels, Sequence) and not isinstance(labels, (str, bytes)):
        labels = list(labels)
    else:
        raise ValueError(f"`labels` must be {allowed}; got {labels!r}.")

    if not labels:
        raise ValueError(f"`labels` must be {allowed}; got an empty sequence.")
    for index, label in enumerate(labels):
        # The value and its index, not the whole list: that may hold thousands of labels.
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, numbers.Integral):
            raise ValueError(f"`labels` must be {allowed}; got {label!r} ({type(label).__name__}) at index {index}.")
        if not 0 <= label < num_classes:
            raise ValueError(f"`labels` must be {allowed}; got {label} at index {index}.")
    return [int(label) for label in labels]


def check_guidance_interval(guidance_interval, num_train_timesteps: int) -> tuple[float, float]:
    """
    Turn `guidance_interval` (a pair `(t_low, t_high)` of training timesteps) into a tuple of two floats, or raise a
    `ValueError` that names the bad value and what is expected.
    """
    expected = (
        f"a pair (t_low, t_high) of numbers with 0 ≤ t_low ≤ t_high ≤ num_train_timesteps={num_train_timesteps}"
    )
    if (
        isinstance(guidance_interval, (str, bytes))
        or not isinstance(guidance_interval, Sequence)
        or len(guidance_interval) != 2
        or not all(is_finite_number(bound) for bound in guidance_interval)
        or not 0 <= guidance_interval[0] <= guidance_interval[1] <= num_train_timesteps
    ):
        raise ValueError(f"`guidance_interval` must be {expected}, got {guidance_interval!r}.")
    return float(guidance_interval[0]), float(guidance_interval[1])


def check_likelihood_proposal(proposal, num_train_timesteps: int) -> list[float]:
    """
    A pipeline's stored `likelihood_proposal` as a list of `num_train_timesteps` floats (the probabilities of timesteps
    0 … T−1 from which `log_likelihood` draws by default), so that it saves to model_index.json; otherwise a
    `ValueError` that names it and what is expected.
    """
    expected = (f"a list of num_train_timesteps={num_train_timesteps} finite numbers (timesteps 0 … "
                f"{num_train_timesteps - 1})")
    try:
        values = torch.as_tensor(proposal, dtype=torch.float64).cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"`likelihood_proposal` (model_index.json) must be {expected}, got {proposal!r:.80}.") from None
    if values.shape != (num_train_timesteps,) or not bool(torch.isfinite(values).all()):
        raise ValueError(f"`likelihood_proposal` (model_index.json) must be {expected}, got one of shape "
                         f"{tuple(values.shape)}{'' if bool(torch.isfinite(values).all()) else ' with NaN or inf'}.")
    return values.tolist()


def check_generators(generator, num_images: int) -> list:
    """
    The generator of each of `num_images` images: one `torch.Generator` (or None) shared by all, or a list (or tuple)
    of one per image; otherwise a `ValueError` naming what was given.
    """
    if isinstance(generator, Sequence) and not isinstance(generator, str):
        if len(generator) != num_images:
            raise ValueError(f"Got {len(generator)} generators for {num_images} images; pass one, or one per image.")
        generators = list(generator)
    else:
        generators = [generator] * num_images
    if generator is not None and not all(isinstance(g, torch.Generator) for g in generators):
        raise ValueError(f"`generator` must be a torch.Generator or a list of them, got {generator!r}.")
    return generators


def max_inference_steps(scheduler) -> tuple[int, str]:
    """
    The most steps `scheduler` takes, and where that number comes from: `original_inference_steps` for a scheduler that
    samples from a schedule it was distilled on (`LCMScheduler`), `num_train_timesteps` for any other. Read from the
    scheduler's own `set_timesteps`: a config made from a student's carries the LCM entry to any scheduler.
    """
    name = type(scheduler).__name__
    if "original_inference_steps" in inspect.signature(scheduler.set_timesteps).parameters:
        return scheduler.config.original_inference_steps, f"{name}'s original_inference_steps"
    return scheduler.config.num_train_timesteps, f"{name}'s num_train_timesteps"


def check_num_inference_steps(num_inference_steps, scheduler, origin: str = "") -> int:
    """
    `num_inference_steps` as an int from 1 to what `scheduler` takes ([`max_inference_steps`]); otherwise a `ValueError`
    naming it, where it came from (`origin`, e.g. " (the pipeline's default_num_inference_steps)") and the limit.
    Checked here, not by the scheduler: diffusers' solvers take 0 or negative steps and return the starting noise,
    round 2.5 to 3 steps, and fail deep inside on more steps than they were trained with.
    """
    maximum, cap = max_inference_steps(scheduler)
    try:
        return check_positive_integer("num_inference_steps", num_inference_steps, maximum)
    except ValueError as error:
        raise ValueError(f"{str(error)[:-1]}{origin}; {maximum} is {cap}.") from None


def check_guidance(guidance_scale, guidance_interval, num_train_timesteps: int,
                   distilled_guidance_scale: float | None = None) -> tuple[float, tuple[float, float] | None]:
    """
    `guidance_scale` as a float ≥ 0 and `guidance_interval` as a pair of floats (or None: every step); a distilled
    student (`distilled_guidance_scale` set) takes only scale 1. Otherwise a `ValueError` naming the value.
    """
    if not is_finite_number(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"`guidance_scale` must be a finite number ≥ 0, got {guidance_scale!r}.")
    if distilled_guidance_scale is not None and guidance_scale != 1:
        raise ValueError(
            f"`guidance_scale` must be 1 for this distilled student, got {guidance_scale!r}: classifier-free "
            f"guidance at scale {distilled_guidance_scale:g} is in its weights (`distilled_guidance_scale`), and "
            "another scale would guide a second time on top of it, with a second network pass per step."
        )
    if guidance_interval is not None:
        guidance_interval = check_guidance_interval(guidance_interval, num_train_timesteps)
    return float(guidance_scale), guidance_interval


def step_eta_kwargs(eta, stored_eta, scheduler) -> dict:
    """
    The `eta` a call passes to `scheduler.step`: `eta` if given, else the pipeline's stored `default_eta` (ignored by
    a scheduler whose step takes none, as a stored default made for another one), else none (the scheduler's own
    default). A `ValueError` names an `eta` outside [0, 1] or given to a scheduler whose step takes none.
    """
    takes_eta = "eta" in inspect.signature(scheduler.step).parameters
    if eta is None:
        if stored_eta is None or not takes_eta:
            return {}
        eta = stored_eta
    if not is_finite_number(eta) or not 0 <= eta <= 1:
        raise ValueError(f"`eta` must be a number in [0, 1] (the share of each step's noise drawn afresh), got {eta!r}.")
    if not takes_eta:
        raise ValueError(f"`eta` was given, but {type(scheduler).__name__}.step takes none; it is the γ of "
                         "`TCDScheduler` and the η of `DDIMScheduler`.")
    return {"eta": float(eta)}


def check_callback(callback_on_step_end, tensor_inputs, allowed: Sequence[str]) -> None:
    """A `ValueError` unless the callback is None or callable and `tensor_inputs` is a list of names from `allowed`."""
    if callback_on_step_end is not None and not callable(callback_on_step_end):
        raise ValueError(f"`callback_on_step_end` must be callable, got {callback_on_step_end!r}.")
    if isinstance(tensor_inputs, str) or not isinstance(tensor_inputs, Sequence):
        raise ValueError(
            f"`callback_on_step_end_tensor_inputs` must be a list of names from {allowed}, got {tensor_inputs!r}."
        )
    unknown_inputs = [name for name in tensor_inputs if name not in allowed]
    if unknown_inputs:
        raise ValueError(f"`callback_on_step_end_tensor_inputs` may only name {allowed}, got {unknown_inputs}.")


def check_output_type(output_type) -> str:
    """`output_type` if it is one a pipeline returns, otherwise a `ValueError` naming it."""
    if output_type not in ("pil", "np", "pt"):
        raise ValueError(f"`output_type` must be 'pil', 'np' or 'pt', got {output_type!r}.")
    return output_type


def is_repo_id(name) -> bool:
    """Whether `name` (a string or an `os.PathLike`) could be a Hub repo id such as `"org/mnist-ddpm"`."""
    if not isinstance(name, str):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def check_guider(guider):
    """
    `guider` (a diffusers `BaseGuidance`, or None) if the pipeline can guide with it; otherwise a `ValueError`. A guider
    that hooks the model (the layer-skip family: `SkipLayerGuidance`, `PerturbedAttentionGuidance`,
    `SmoothedEnergyGuidance`, diffusers' `AutoGuidance`) perturbs diffusers' `Attention` modules or its transformer
    blocks, which `ClassConditionedUNet` does not have: it would raise or change nothing.
    """
    if guider is None:
        return None
    from diffusers.guiders import BaseGuidance  # diffusers, not this package: the file stays free to copy

    if not isinstance(guider, BaseGuidance):
        raise ValueError(f"`guider` must be a diffusers guider (`diffusers.guiders.BaseGuidance`), got {guider!r:.80}.")
    if type(guider).prepare_models is not BaseGuidance.prepare_models \
            or type(guider).cleanup_models is not BaseGuidance.cleanup_models:
        raise ValueError(
            f"{type(guider).__name__} guides by hooking diffusers' attention or transformer blocks, which this UNet "
            "does not have: it would raise or change nothing. Use a guider that combines the two predictions "
            "(ClassifierFreeGuidance, AdaptiveProjectedGuidance, ClassifierFreeZeroStarGuidance, "
            "TangentialClassifierFreeGuidance), or the pipeline's `guidance_unet` for autoguidance."
        )
    return guider
