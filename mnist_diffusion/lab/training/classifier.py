"""Training of the evaluation classifier of `classifier.py`, behind `accelerate launch scripts/train_classifier.py`.

Cross-entropy on the MNIST training split, each digit randomly rotated, scaled and shifted a little, with AdamW and a
one-cycle learning rate; then the accuracy on the test split, and the model saved with its image processor and
`training_results.json`. The loop is made of the pieces of `loop.py` and `options.py`: seeding, the length of the run, the time
budget, the run record, the option checks.
"""

import argparse
import hashlib
import json
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ...data import load_mnist
from ...images import IMAGE_SIZE, digits_to_unit_range
from ..arguments import out_of_range
from ..classifier import DigitClassifier, build_classifier, normalize
from ..shipped import SHIPPED_CLASSIFIER
from .checkpoints import new_training_state
from .loop import (Stopwatch, Throughput, backward_and_step, build_seeded, count_step, log_step, make_accelerator,
                   make_dataloader, progress_bar, should_stop, training_batches, training_length)
from .options import check_seed, parse_checked
from .record import run_record, swap_in

SCRIPT = "scripts/train_classifier.py"
DEFAULT_OUTPUT_DIR = "pretrained/mnist-classifier"  # the shipped evaluation classifier's folder
RESULTS = "training_results.json"
# Training augmentation: each digit is rotated, scaled and shifted by a random amount up to these bounds.
MAX_ROTATION_DEGREES = 10.0
MAX_SCALE_CHANGE = 0.1
MAX_SHIFT_PIXELS = 2.0


def build_parser() -> argparse.ArgumentParser:
    """The options of `scripts/train_classifier.py`."""
    parser = argparse.ArgumentParser(
        prog="train_classifier.py",
        description="Train the evaluation classifier (a transformers RegNet) on MNIST; run with `accelerate launch` "
                    "for several processes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data and output")
    data.add_argument("--data_dir", default="data/mnist",
                      help="Folder with the four MNIST IDX .gz files; missing files are downloaded there when online.")
    data.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR,
                      help=f"Where the model, its image processor and {RESULTS} go.")
    data.add_argument("--max_train_samples", type=int, default=None,
                      help="Train on the first N training images only (for quick checks).")
    data.add_argument("--max_eval_samples", type=int, default=None,
                      help="Evaluate on the first N test images only (for quick checks).")
    data.add_argument("--train_digits", default=None,
                      help="A .pt file of digits to train on instead of the MNIST training split, a dict of uint8 "
                           "`images` (N, 28, 28) and int64 `labels` (N,) in 0–9: generated digits, for the "
                           "Classification Accuracy Score of scripts/evaluate.py --cas. The test split is still real.")
    model = parser.add_argument_group("model")
    model.add_argument("--hidden_sizes", type=int, nargs="+", default=[32, 64, 128],
                       help="Channels of the RegNet stages (at 14, 7 and 4 pixels).")
    model.add_argument("--depths", type=int, nargs="+", default=[2, 2, 2], help="Residual blocks per stage.")
    model.add_argument("--embedding_size", type=int, default=32, help="Channels of the stem convolution.")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--seed", type=int, default=0, help="Seed of weights, data order and augmentation.")
    optim.add_argument("--num_epochs", type=int, default=15, help="Passes over the 60k training images.")
    optim.add_argument("--train_batch_size", type=int, default=128, help="Images per process per step.")
    optim.add_argument("--learning_rate", type=float, default=3e-3,
                       help="Peak learning rate of the one-cycle schedule.")
    optim.add_argument("--weight_decay", type=float, default=0.05, help="Decoupled weight decay of AdamW.")
    optim.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                       help=f"Randomly rotate (±{MAX_ROTATION_DEGREES:g}°), scale (±{100 * MAX_SCALE_CHANGE:g}%%) "
                            f"and shift (±{MAX_SHIFT_PIXELS:g} px) every training digit.")
    optim.add_argument("--mixed_precision", choices=["no", "bf16", "fp16"], default="bf16",
                       help="Autocast precision of training (bf16 is fast on recent CPUs); evaluation runs in "
                            "float32.")
    optim.add_argument("--max_train_minutes", type=float, default=None,
                       help="Wall-clock budget: stop training once this much time has passed (the model is still "
                            "evaluated and saved; the learning rate will not have finished its decay).")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options of `scripts/train_classifier.py`, checked by [`check_args`]."""
    return parse_checked(build_parser(), check_args, argv)


def check_args(args: argparse.Namespace) -> list[str]:
    """Every nonsense option value of `scripts/train_classifier.py`, named, so that nothing starts training with it."""
    problems = out_of_range(args, ["num_epochs", "train_batch_size", "embedding_size", "max_train_samples",
                                   "max_eval_samples"], "a positive integer")
    if len(args.hidden_sizes) != len(args.depths) or min(args.hidden_sizes + args.depths) < 1:
        problems.append(f"--hidden_sizes {args.hidden_sizes} and --depths {args.depths} must be positive and "
                        "of the same length")
    problems += out_of_range(args, ["learning_rate", "max_train_minutes"], "positive")
    problems += out_of_range(args, ["weight_decay"], "≥ 0")
    if args.train_digits is not None:
        if Path(args.output_dir).resolve() == SHIPPED_CLASSIFIER.resolve() or args.output_dir == DEFAULT_OUTPUT_DIR:
            problems.append(f"--train_digits trains on other digits than MNIST's: give it an --output_dir of its own "
                            f"(--output_dir {args.output_dir} is the shipped evaluation classifier's folder)")
        if not Path(args.train_digits).is_file():
            problems.append(f"--train_digits {args.train_digits} is not a file")
        else:
            try:
                images, _ = load_train_digits(args.train_digits)
            except ValueError as error:
                problems.append(f"--train_digits: {error}")
            else:
                usable = len(images[: args.max_train_samples])
                if 0 < args.train_batch_size and usable < args.train_batch_size:
                    problems.append(f"--train_digits {args.train_digits} holds {usable} digits to train on, fewer "
                                    f"than one batch of --train_batch_size {args.train_batch_size}")
    return problems + check_seed(args.seed)


def load_train_digits(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The digits of a `--train_digits` file: uint8 `images` (N, 28, 28) and int64 `labels` (N,) in 0–9.

    Raises:
        `ValueError`: a file that cannot be read as one, or holds anything else, named.
    """
    try:
        digits = torch.load(path, weights_only=True)
    except Exception as error:  # a truncated, empty, text or foreign file: torch.load raises many kinds
        raise ValueError(f"{path} cannot be read as a torch file of digits ({type(error).__name__}: {error}).") from None
    images, labels = (digits.get(key) if isinstance(digits, dict) else None for key in ("images", "labels"))
    if not (torch.is_tensor(images) and images.dtype == torch.uint8 and images.ndim == 3
            and images.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE)):
        raise ValueError(f"{path} must hold uint8 `images` shaped (N, 28, 28), got "
                         f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}.")
    if not (torch.is_tensor(labels) and labels.dtype == torch.int64 and labels.shape == (len(images),)
            and len(labels) and 0 <= int(labels.min()) and int(labels.max()) <= 9):
        raise ValueError(f"{path} must hold one int64 label in 0–9 per image in `labels` ({len(images)} of them).")
    return images, labels


def describe_train_digits(path: str | Path, labels: torch.Tensor) -> dict:
    """What a `--train_digits` run trained on, for its record: the file, its sha256, and the digits it took from it
    (`labels`) per class."""
    return {"data_set": f"the digits of {path}", "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
            "num_train_images": len(labels), "per_class": labels.bincount(minlength=10).tolist()}


def random_affine(images: torch.Tensor) -> torch.Tensor:
    """Rotate, scale and shift each [0, 1] image by a random amount within the bounds above; new pixels are black."""
    n = len(images)

    def uniform(bound: float, *shape: int) -> torch.Tensor:
        return (torch.rand(n, *shape) * 2 - 1) * bound

    angle = uniform(math.radians(MAX_ROTATION_DEGREES))
    scale = 1 + uniform(MAX_SCALE_CHANGE)
    shift = uniform(2 * MAX_SHIFT_PIXELS / IMAGE_SIZE, 2)  # affine_grid coordinates span [-1, 1], i.e. 2 per width
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def classification_loss(model, image_processor, images: torch.Tensor, labels: torch.Tensor,
                        augment: bool) -> torch.Tensor:
    """The cross-entropy of one batch of uint8 digits, augmented by [`random_affine`] if `augment`."""
    pixels = digits_to_unit_range(images)
    if augment:
        pixels = random_affine(pixels)
    pixel_values = normalize(pixels, image_processor).contiguous(memory_format=torch.channels_last)
    return F.cross_entropy(model(pixel_values=pixel_values).logits.float(), labels)


def evaluate_on_test_split(classifier, image_processor, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """The accuracy of `classifier` on the test digits, as the record holds it."""
    correct = int((DigitClassifier(classifier, image_processor).predict(images) == labels).sum())
    return {"test_accuracy": correct / len(labels), "test_correct": correct, "test_total": len(labels)}


def save_classifier(output_dir: Path, classifier, image_processor, record: dict) -> None:
    """
    Save the model, its image processor and the training record, as the Auto classes load them: written whole to a
    staging folder, then swapped in file by file ([`swap_in`]), so a classifier already there is never half
    overwritten.
    """
    staging = output_dir.parent / f".tmp-{output_dir.name}"
    shutil.rmtree(staging, ignore_errors=True)
    classifier.save_pretrained(staging)
    image_processor.save_pretrained(staging)
    (staging / RESULTS).write_text(json.dumps(record, indent=2) + "\n")
    swap_in(staging, output_dir, sorted(path.name for path in staging.iterdir()))


def train_classifier(args: argparse.Namespace) -> dict | None:
    """
    Train the classifier on the MNIST training split (or `--train_digits`), measure its accuracy on the test split and save it.

    Args:
        args: the options of `build_parser()`.

    Returns:
        The training record also written to `output_dir/training_results.json` (test accuracy, epochs, the run record
        of `record.run_record` and the model config) on the main process, None on the others.
    """
    output_dir = Path(args.output_dir)
    run_started = time.perf_counter()

    # 1. accelerator
    accelerator = make_accelerator(output_dir, args.mixed_precision)

    # 2. model and optimiser
    model, image_processor = build_seeded(
        args.seed, lambda: build_classifier(args.hidden_sizes, args.depths, args.embedding_size)
    )
    model = model.to(memory_format=torch.channels_last)  # ≈ 30% faster convolutions on CPU
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)

    # 3. data, which sets the length of the run and of its lr schedule
    with accelerator.main_process_first():  # the main process downloads missing files, the others then read them
        if args.train_digits is None:
            train_images, train_labels = load_mnist(args.data_dir, "train")
        else:
            train_images, train_labels = load_train_digits(args.train_digits)
        test_images, test_labels = load_mnist(args.data_dir, "test")
    train_images, train_labels = train_images[: args.max_train_samples], train_labels[: args.max_train_samples]
    test_images, test_labels = test_images[: args.max_eval_samples], test_labels[: args.max_eval_samples]
    dataloader = make_dataloader(torch.utils.data.TensorDataset(train_images, train_labels), args.train_batch_size,
                                 args.seed, args.train_digits or args.data_dir)
    length = training_length(len(dataloader), accelerator.num_processes, 1, args.num_epochs)
    # accelerate steps a prepared scheduler once per process at every optimiser step, hence the factor.
    lr_scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.learning_rate, total_steps=length.max_train_steps * accelerator.num_processes,
        pct_start=0.2,
    )
    model, optimizer, dataloader, lr_scheduler = accelerator.prepare(model, optimizer, dataloader, lr_scheduler)
    accelerator.print(
        f"{len(train_images)} training images, {accelerator.unwrap_model(model).num_parameters()} parameters, "
        f"{accelerator.num_processes} process(es) ({accelerator.distributed_type}), {length.max_train_steps} steps."
    )

    # 4. loop, until the epochs or the minutes run out
    state = new_training_state()
    global_batch = args.train_batch_size * accelerator.num_processes
    progress = progress_bar(accelerator, state, length.max_train_steps)
    stopwatch, throughput = Stopwatch(), Throughput()
    model.train()
    for images, labels in training_batches(accelerator, dataloader, state["global_step"], length):
        loss = classification_loss(model, image_processor, images, labels, args.augment)
        backward_and_step(accelerator, loss, model, optimizer, lr_scheduler)
        step = count_step(state, global_batch, stopwatch.seconds())
        if step % 10 == 0 or step == length.max_train_steps:
            log_step(accelerator, progress, step, loss, lr_scheduler.get_last_lr()[0],
                     throughput.read(state["images_seen"]))
        progress.update(1)
        if should_stop(accelerator, state, length.max_train_steps, args.max_train_minutes):
            break
    progress.close()

    # 5. evaluate on the test split and save, on the main process
    record = None
    if accelerator.is_main_process:
        classifier = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
        classifier = classifier.to(memory_format=torch.contiguous_format)
        config = classifier.config.to_dict()  # which names the transformers version that writes it
        record = {
            **evaluate_on_test_split(classifier, image_processor, test_images, test_labels),
            "epochs_completed": state["global_step"] // length.steps_per_epoch,
            "num_epochs": args.num_epochs,
            "stopped_by_time_limit": state["global_step"] < length.max_train_steps,
            "wall_minutes": round((time.perf_counter() - run_started) / 60, 2),  # with data loading and evaluation
            "train_images_per_second": round(state["images_seen"] / state["train_seconds"], 1),
            **run_record(accelerator, SCRIPT, args, state, classifier),
            **({} if args.train_digits is None else {"data": describe_train_digits(args.train_digits, train_labels)}),
            "config": config,
            "transformers_version": config["transformers_version"],
        }
        save_classifier(output_dir, classifier, image_processor, record)
        accelerator.print(f"Test accuracy {record['test_correct']}/{record['test_total']} = "
                          f"{record['test_accuracy']:.2%}; saved to {output_dir}.")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return record


def main(argv: list[str] | None = None) -> None:
    train_classifier(parse_args(argv))
