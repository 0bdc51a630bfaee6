# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""
The class that makes a digit most probable under the conditional DDPM: a classifier that was never trained to classify
(Li et al., 2023, "Your Diffusion Model is Secretly a Zero-Shot Classifier"). The ε-error of the class is the part of
the variational bound (`likelihood.py`) that depends on it. `MNISTDDPMPipeline.classify` is a thin front over this.
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils import BaseOutput

from .images import digits_to_pixel_levels, pixel_levels_to_model_range
from .likelihood import BoundCoefficients, model_prediction, standard_normal
from .pipeline_mnist_ddpm_checks import check_generators, check_positive_integer, num_class_labels

GOLDEN_RATIO_CONJUGATE = (math.sqrt(5) - 1) / 2
WEIGHTINGS = ("uniform", "bound")


@dataclass
class ZeroShotOutput(BaseOutput):
    """
    Output of [`zero_shot_classify`] (and `MNISTDDPMPipeline.classify`).

    Args:
        labels (`torch.Tensor` of shape `(batch_size,)`): the predicted digit of each image: the class whose weighted
            ε-error is smallest.
        scores (`torch.Tensor` of shape `(batch_size, num_classes)`): each class's weighted mean squared ε-error per
            pixel (lower is more probable).
        errors (`torch.Tensor` of shape `(batch_size, num_trials, num_classes)`): each trial's mean squared ε-error
            per pixel, unweighted, so that other weightings or fewer trials can be scored afterwards (NaN where
            pruning skipped a class).
        timesteps (`torch.Tensor` of shape `(num_trials,)`): the timestep of each trial.
        weights (`torch.Tensor` of shape `(num_trials,)`): the weight of each trial in `scores`.
    """

    labels: torch.Tensor
    scores: torch.Tensor
    errors: torch.Tensor
    timesteps: torch.Tensor
    weights: torch.Tensor


def trial_timesteps(num_trials: int, num_train_timesteps: int) -> torch.Tensor:
    """
    The timesteps of the zero-shot classifier's trials: t_i = ⌊frac(i · φ′) · T⌋ (φ′ the golden ratio's conjugate),
    an evenly spread sequence whose every prefix is evenly spread too, so that the timesteps of the first n trials of
    a longer run are those of a run with n trials.
    """
    fractions = (np.arange(1, num_trials + 1) * GOLDEN_RATIO_CONJUGATE) % 1.0
    return torch.from_numpy((fractions * num_train_timesteps).astype(np.int64))


def check_epsilon_prediction(scheduler) -> None:
    """Raise a `ValueError` unless the scheduler's model predicts ε, which the zero-shot classifier scores."""
    prediction_type = scheduler.config.get("prediction_type", "epsilon")
    if prediction_type != "epsilon":
        raise ValueError(f"The zero-shot classifier scores ε-predictions; this scheduler's prediction_type is "
                         f"{prediction_type!r}.")


@torch.no_grad()
def zero_shot_classify(unet, scheduler, images, num_classes: int, num_trials: int = 50, weighting: str = "uniform",
                       prune: tuple[int, int] | None = None, generator: torch.Generator | list | None = None,
                       batch_size: int = 1000) -> ZeroShotOutput:
    """
    Classify digits with the conditional model alone (Li et al., 2023): for each image, draw `num_trials` pairs
    (t, ε), noise the image to x_t, and score each class y by the mean of ‖ε − ε_θ(x_t, t, y)‖² over the trials, the
    same pairs for every class; the predicted digit is the class of smallest score, the one whose bound is lowest.

    Args:
        unet: the noise predictor, called as `unet(x_t, t, labels).sample`; it must predict ε.
        scheduler: the scheduler that defines the forward process (its `alphas_cumprod`).
        images: digits, as [`~images.digits_to_pixel_levels`] reads them.
        num_classes (`int`): the classes to score, 0 … num_classes − 1: at least 2, and at most the digits `unet` is
            conditioned on (its null label is no class).
        num_trials (`int`, defaults to 50): (t, ε) pairs per image, at most T (`num_train_timesteps`: a trial's noise
            is held for every class, so memory grows with the trials); timesteps from [`trial_timesteps`].
        weighting (`str`, defaults to `"uniform"`): `"uniform"` averages the trials' errors; `"bound"` weights each
            by the variational bound's weight of its timestep ([`BoundCoefficients.epsilon_weights`]).
        prune (`tuple[int, int]`, *optional*): `(after, keep)`: after the first `after` trials, only the `keep`
            classes of smallest score so far get the remaining trials (Li et al.'s adaptive scheme); the others'
            errors are NaN and their scores infinite. The kept classes' errors are those of a run without pruning.
        generator (`torch.Generator` or `list[torch.Generator]`, *optional*): the source of the noise: one, from which
            each image draws its trials' ε in turn, or one per image. With one per image (or for the first image),
            the first n trials of a run are exactly a run with n trials; otherwise they are distributed as one.
        batch_size (`int`, defaults to 1000): rows per UNet call; every class of an image's trial is a row.

    Returns:
        [`ZeroShotOutput`]
    """
    coefficients = BoundCoefficients(scheduler)  # refuses a distilled student's scheduler
    check_epsilon_prediction(scheduler)
    num_trials = check_positive_integer("num_trials", num_trials, coefficients.num_train_timesteps)
    batch_size = check_positive_integer("batch_size", batch_size)
    max_classes = num_class_labels(unet) if getattr(unet, "config", None) is not None else None
    if (isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, numbers.Integral) or num_classes < 2
            or (max_classes is not None and num_classes > max_classes)):
        most = "" if max_classes is None else f", at most the {max_classes} digits the UNet is conditioned on"
        raise ValueError(f"`num_classes` must be an integer ≥ 2{most}, got {num_classes!r}.")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"`weighting` must be one of {list(WEIGHTINGS)}, got {weighting!r}.")
    if prune is not None and not (isinstance(prune, (tuple, list)) and len(prune) == 2
                                  and all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
                                          for v in prune)
                                  and 1 <= prune[0] < num_trials and 1 <= prune[1] < num_classes):
        raise ValueError(f"`prune` must be a pair (after, keep) with 1 ≤ after < num_trials={num_trials} and "
                         f"1 ≤ keep < {num_classes} classes, got {prune!r}.")
    prune = None if prune is None else (int(prune[0]), int(prune[1]))
    levels = digits_to_pixel_levels(images)
    generators = check_generators(generator, len(levels))
    timesteps = trial_timesteps(num_trials, coefficients.num_train_timesteps)
    weights = coefficients.epsilon_weights()[timesteps] if weighting == "bound" else torch.ones(num_trials).double()
    weights = weights / weights.sum()

    device = next(unet.parameters()).device
    alpha_prod = coefficients.alphas_cumprod[timesteps].float().reshape(1, -1, 1, 1, 1)
    after = num_trials if prune is None else prune[0]

    def epsilon_errors(x_t, noise, images_index, trials, classes) -> torch.Tensor:
        # One row per (image, trial, class): the mean squared error of the model's ε at that noising and class.
        errors = torch.empty(len(classes))
        for start in range(0, len(classes), batch_size):
            part = slice(start, start + batch_size)
            image, trial = images_index[part], trials[part]
            prediction = model_prediction(unet, x_t[image, trial].to(device), timesteps[trial].to(device),
                                       classes[part].to(device)).cpu()
            errors[part] = (prediction - noise[image, trial]).pow(2).flatten(1).mean(1)
        return errors

    # A few images at a time (as many as fill a batch), so memory stays that of a batch however many are passed.
    chunk = max(1, batch_size // (num_trials * num_classes))
    errors = torch.full((len(levels), num_trials, num_classes), float("nan"))
    for first in range(0, len(levels), chunk):
        x = pixel_levels_to_model_range(levels[first : first + chunk])
        noise = torch.stack([standard_normal((num_trials,) + x.shape[1:], g) for g in generators[first : first + chunk]])
        x_t = alpha_prod.sqrt() * x.unsqueeze(1) + (1 - alpha_prod).sqrt() * noise  # (n, trials, 1, 28, 28)
        found = errors[first : first + chunk]  # a view: filled in place
        # Every class of the first `after` trials (all trials without pruning), class fastest: an image's classes
        # share one x_t and one ε in neighbouring rows.
        grid = torch.cartesian_prod(torch.arange(len(x)), torch.arange(after), torch.arange(num_classes))
        found[:, :after] = epsilon_errors(x_t, noise, *grid.unbind(1)).reshape(len(x), after, num_classes)
        if prune is not None:
            early = (found[:, :after].double() * weights[:after].reshape(1, -1, 1)).sum(1)
            kept = early.topk(prune[1], dim=1, largest=False).indices  # (n, keep)
            image = torch.arange(len(x)).reshape(-1, 1, 1).expand(-1, num_trials - after, prune[1])
            trial = torch.arange(after, num_trials).reshape(1, -1, 1).expand(len(x), -1, prune[1])
            label = kept.unsqueeze(1).expand(-1, num_trials - after, -1)
            found[image, trial, label] = epsilon_errors(x_t, noise, image.flatten(), trial.flatten(),
                                                        label.flatten()).reshape(image.shape)
    scores = (errors.double() * weights.reshape(1, -1, 1)).sum(1).nan_to_num(nan=math.inf)
    return ZeroShotOutput(labels=scores.argmin(1), scores=scores, errors=errors, timesteps=timesteps,
                          weights=weights)


@torch.no_grad()
def classify(pipe, images, num_trials: int = 50, weighting: str = "uniform", prune: tuple[int, int] | None = None,
             generator=None, batch_size: int = 1000) -> ZeroShotOutput:
    """
    `pipe.classify`: the digit whose conditional ε-prediction errs least on the same `num_trials` noisings (t, ε) of
    the image, i.e. whose variational bound is lowest (Li et al., 2023, "Your Diffusion Model is Secretly a Zero-Shot
    Classifier"). `num_trials` × 10 UNet rows per image.

    Args:
        pipe (`MNISTDDPMPipeline`): the model; its scheduler must predict ε.
        images: digits, as in [`~likelihood.log_likelihood`].
        num_trials (`int`, defaults to 50): (t, ε) pairs per image, shared by the ten classes; at most
            `num_train_timesteps`.
        weighting (`str`, defaults to `"uniform"`): `"uniform"` or `"bound"` (each timestep weighted as in the
            variational bound).
        prune (`tuple[int, int]`, *optional*): `(after, keep)`: after `after` trials, only the `keep` most probable
            classes so far get the remaining trials (Li et al.'s adaptive scheme; fewer UNet rows).
        generator (`torch.Generator` or `list[torch.Generator]`, *optional*): the source of the noise: one for all
            images, or one per image.
        batch_size (`int`, defaults to 1000): rows per UNet call.

    Returns:
        [`ZeroShotOutput`]: `labels` (the predicted digits), `scores` (per class, lower is more probable), each trial's
        `errors`, `timesteps` and `weights`.
    """
    output = zero_shot_classify(pipe.unet, pipe.scheduler, images, num_class_labels(pipe.unet), num_trials, weighting,
                                prune, generator, batch_size)
    pipe.maybe_free_model_hooks()
    return output
