"""
The Classification Accuracy Score (Ravuri & Vinyals, 2019): the evaluation classifier's recipe trained from scratch
on generated digits alone, tested on real ones, next to the same recipe on as many real training digits. The only
part of the evaluation that trains (transformers and accelerate, imported when used).
"""

import tempfile
from pathlib import Path

import torch

from ...data import load_mnist
from ...images import IMAGE_SIZE, digits_to_unit_range
from .cache import cache_path


def classification_accuracy_score(images: torch.Tensor, labels: torch.Tensor, data_dir: str, seed: int) -> dict:
    """
    The Classification Accuracy Score (Ravuri & Vinyals, 2019) of a set of digits: the evaluation classifier's
    architecture, trained from scratch with its own recipe (`scripts/train_classifier.py`'s defaults) on these digits
    alone, then tested on the real test split. It asks whether the digits can stand in for real training data, which
    legibility alone does not: a set of identical perfect 7s is legible and useless to learn from.

    Args:
        images (`torch.Tensor`): digits in [0, 1], (N, 1, 28, 28) (rounded to 8-bit pixels, as saved images would be).
        labels (`torch.Tensor`): their classes.

    Returns:
        A dict with the test `accuracy`, the number of `train_digits` and the training's `wall_minutes`.
    """
    from ..training.classifier import parse_args, train_classifier  # transformers and accelerate: imported when used

    pixels = (images.float().clamp(0, 1) * 255).round().to(torch.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    with tempfile.TemporaryDirectory() as work_dir:
        digits = Path(work_dir) / "train_digits.pt"
        torch.save({"images": pixels, "labels": labels.long()}, digits)
        record = train_classifier(parse_args(["--data_dir", str(data_dir), "--output_dir", str(Path(work_dir) / "model"),
                                              "--train_digits", str(digits), "--seed", str(seed)]))
    return {"accuracy": record["test_accuracy"], "train_digits": len(labels), "wall_minutes": record["wall_minutes"]}


def cas_cache_path(cache_dir: Path | None, name: str, data_dir: str, **key) -> Path | None:
    """
    Where a CAS result is kept in `cache_dir` ([`cache_path`]): keyed by `key`, the data folder and the classifier
    recipe's defaults (what the training runs with), so another data set or recipe is trained anew.
    """
    from ..training.classifier import build_parser as classifier_parser

    return cache_path(cache_dir, name, **key, data_dir=str(Path(data_dir).resolve()),
                      recipe=vars(classifier_parser().parse_args([])))


def real_training_digits(data_dir: str, samples_per_digit: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`samples_per_digit` random real training digits of each class, in [0, 1]: the real set CAS is compared with."""
    train_images, train_labels = load_mnist(data_dir, "train")
    order = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(seed))
    chosen = torch.cat([order[train_labels[order] == digit][:samples_per_digit] for digit in range(10)])
    return digits_to_unit_range(train_images[chosen]), train_labels[chosen]
