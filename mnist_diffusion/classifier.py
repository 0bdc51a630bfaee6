"""The evaluation classifier: a transformers RegNet trained on MNIST, the MNIST counterpart of FID's Inception network.

It is an ordinary `RegNetForImageClassification` (1 grey channel, labels "0".."9") saved with `save_pretrained`
next to a standard `ConvNextImageProcessor`, so that anyone classifies a digit with transformers alone:

    processor = AutoImageProcessor.from_pretrained("pretrained/mnist-classifier")
    model = AutoModelForImageClassification.from_pretrained("pretrained/mnist-classifier")
    logits = model(**processor(Image.open("digit.png").convert("L"), return_tensors="pt")).logits

Its pooled penultimate features (`RegNetModel.pooler_output`, 128 numbers per image) are the space where
`evaluation.py` measures the Fréchet distance. `DigitClassifier` runs the same model on whole tensors of digits.

Why this architecture. The processor only rescales and normalises (x / 255 − 0.5) / 0.5, with no resize, so that the
batched torch preprocessing of `DigitClassifier` is exactly the processor's. That rules out upscaling, so the network
must keep enough resolution on 28 × 28 input by itself. Measured on this machine (one thread, bf16 autocast,
channels-last, forward + backward + AdamW on batches of 128, while another training job held the other core):

    architecture (28 × 28 input, feature-map sizes)            params   train GFLOP/img   images/s
    ResNet, basic, 32-64-128 ×1        (7, 7, 4, 2)              0.31M       0.018          ≈ 4900
    ResNet, basic, 64-128-256 ×2       (7, 7, 4, 2)              2.8M        0.146          ≈  830
    ResNet at 56 (2× resize), 32-64-128 ×2  (14, 14, 7, 4)       0.70M       0.137          ≈  740
    ConvNeXt, patch 1, 32-64-128 ×1    (28, 14, 7)               0.23M       0.38           ≈  180
    ConvNeXt, patch 2, 32-64-128 ×2    (14, 7, 4)                0.41M       0.17           ≈  400
    RegNet-X, stem 32, 32-64-128 ×2    (14, 14, 7, 4)   <- this  0.48M       0.091          ≈  810

ResNet's stem (7 × 7 stride-2 conv, then a stride-2 max-pool) leaves 7 × 7 pixels after one layer, which risks the
last tenth of a percent that 99.5% needs; ConvNeXt keeps the resolution but its depthwise 7 × 7 convolutions and
LayerNorms are slow on CPU. RegNet's stem is a single 3 × 3 stride-2 convolution, and with
`downsample_in_first_stage=False` its stages work at 14, 7 and 4 pixels, the resolutions of a classic MNIST CNN; with
`groups_width` as wide as the widest stage its blocks are plain (ungrouped) 1×1–3×3–1×1 residual blocks. In the
training loop itself (augmentation included) one thread trains ≈ 1,050 images/s; at ≈ 1,500–1,900 images/s on two
cores the default 15 epochs (900k images, with small random rotations, scalings and shifts) take 8–10 minutes.

transformers' `pipeline("image-classification")` converts every image to RGB, which a grey model cannot take: use the
image processor and the model directly, as above.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from tqdm.auto import tqdm

from .data import load_mnist

try:
    import transformers
    from transformers import (
        AutoImageProcessor,
        AutoModelForImageClassification,
        ConvNextImageProcessorPil,
        RegNetConfig,
        RegNetForImageClassification,
    )
except ImportError as error:  # transformers is an extra of the evaluation, not a requirement of the pipeline
    raise ImportError(
        "The evaluation classifier needs `transformers`: pip install 'mnist-diffusion[eval]'."
    ) from error

IMAGE_SIZE = 28
DIGITS = [str(digit) for digit in range(10)]
# Training augmentation: each digit is rotated, scaled and shifted by a random amount up to these bounds.
MAX_ROTATION_DEGREES = 10.0
MAX_SCALE_CHANGE = 0.1
MAX_SHIFT_PIXELS = 2.0


def build_classifier(hidden_sizes=(32, 64, 128), depths=(2, 2, 2), embedding_size=32):
    """
    A fresh (untrained) RegNet-X for 1-channel 28 × 28 digits and the image processor that feeds it.

    Args:
        hidden_sizes: channels of the stages, which work at 14, 7 and 4 pixels (a stage fewer or more is fine).
        depths: residual blocks per stage.
        embedding_size: channels of the stem, a 3 × 3 stride-2 convolution (28 → 14 pixels).

    Returns:
        `(model, image_processor)`: a `RegNetForImageClassification` with labels "0".."9" and a
        `ConvNextImageProcessor` (the one transformers pairs with RegNet) that maps a PIL "L" image to
        (x / 255 − 0.5) / 0.5, shaped (1, 28, 28), without resizing.
    """
    config = RegNetConfig(
        num_channels=1,
        embedding_size=embedding_size,
        hidden_sizes=list(hidden_sizes),
        depths=list(depths),
        layer_type="x",
        groups_width=max(hidden_sizes),  # one group: plain convolutions, which are fast on CPU
        downsample_in_first_stage=False,  # the stem already halved 28 → 14; keep 14 for the first stage
        id2label=dict(enumerate(DIGITS)),
        label2id={label: digit for digit, label in enumerate(DIGITS)},
    )
    image_processor = ConvNextImageProcessorPil(
        do_resize=False,
        size={"shortest_edge": IMAGE_SIZE},  # unused with do_resize=False; records the native size
        crop_pct=1.0,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5],
        image_std=[0.5],
    )
    return RegNetForImageClassification(config), image_processor


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """
    Digits as float images (N, 1, 28, 28) in [0, 1]: uint8 pixels (N, 28, 28) are divided by 255, float images (what
    `MNISTDDPMPipeline(..., output_type="pt")` returns) are taken as they are. A 3-D tensor gets its channel axis.
    """
    images = torch.as_tensor(images)
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[1:] != (1, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"Expected digits shaped (N, 28, 28) or (N, 1, 28, 28), got {tuple(images.shape)}.")
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point():
        raise ValueError(f"Expected uint8 pixels or float images in [0, 1], got dtype {images.dtype}.")
    if len(images) and (images.min() < 0 or images.max() > 1):
        raise ValueError(
            f"Float images must be in [0, 1], got values in [{images.min():.3f}, {images.max():.3f}] "
            "(images in the diffusion model's [-1, 1] need `images / 2 + 0.5` first)."
        )
    return images.float()


def normalize(unit_images: torch.Tensor, image_processor) -> torch.Tensor:
    """The image processor's normalisation, in torch: [0, 1] images → the `pixel_values` the model was trained on."""
    mean = torch.tensor(image_processor.image_mean, dtype=unit_images.dtype, device=unit_images.device)
    std = torch.tensor(image_processor.image_std, dtype=unit_images.dtype, device=unit_images.device)
    return (unit_images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


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


class DigitClassifier:
    """
    A trained digit classifier run on whole tensors of digits, in batches, in float32 under `torch.inference_mode`.

    The preprocessing is the image processor's (rescale and normalise; no resize is allowed), done in torch: the
    logits equal those of `model(**image_processor(pil_images, return_tensors="pt"))` for the same digits.
    `images` everywhere is uint8 pixels (N, 28, 28) (real MNIST) or float images (N, 1, 28, 28) in [0, 1] (what
    `MNISTDDPMPipeline(..., output_type="pt")` returns).
    """

    def __init__(self, model, image_processor, batch_size: int = 500):
        for step in ("do_resize", "do_center_crop", "do_pad"):
            if getattr(image_processor, step, None):
                raise ValueError(f"DigitClassifier reproduces rescaling and normalisation only, but `{step}` is set.")
        if not (image_processor.do_rescale and math.isclose(image_processor.rescale_factor, 1 / 255)):
            raise ValueError("DigitClassifier expects an image processor that rescales pixels by 1/255.")
        self.model = model.eval()
        self.image_processor = image_processor
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 500):
        """Load a folder written by `train_classifier` (or a ResNet, RegNet or ConvNeXt with such a processor)."""
        model = AutoModelForImageClassification.from_pretrained(path).to(device)
        return cls(model, AutoImageProcessor.from_pretrained(path), batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """The tensors the image processor would make of these digits: (N, 1, 28, 28) float32."""
        unit_images = to_unit_range(images)
        if self.image_processor.do_normalize:
            unit_images = normalize(unit_images, self.image_processor)
        return unit_images

    @torch.inference_mode()
    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled penultimate features (N, D) and logits (N, 10), on the CPU."""
        features, logits = [], []
        for start in range(0, len(images), self.batch_size):
            pixel_values = self.pixel_values(images[start : start + self.batch_size]).to(self.device)
            pooled = self.model.base_model(pixel_values).pooler_output.flatten(1)
            features.append(pooled.cpu())
            logits.append(self.model.classifier(pooled).cpu())
        return torch.cat(features), torch.cat(logits)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores, float32 (N, 10)."""
        return self._forward(images)[1]

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The digit each image shows, int64 (N,)."""
        return self.logits(images).argmax(dim=1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (the input of the classification head), float64 (N, D): the Fréchet space."""
        return self._forward(images)[0].double()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_classifier.py",
        description="Train the evaluation classifier (a transformers RegNet) on MNIST; run with `accelerate launch` "
                    "for several processes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data and output")
    data.add_argument("--data_dir", default="data/mnist",
                      help="Folder with the four MNIST IDX .gz files; missing files are downloaded there when online.")
    data.add_argument("--output_dir", default="pretrained/mnist-classifier",
                      help="Where the model, its image processor and training_results.json go.")
    data.add_argument("--max_train_samples", type=int, default=None,
                      help="Train on the first N training images only (for quick checks).")
    data.add_argument("--max_eval_samples", type=int, default=None,
                      help="Evaluate on the first N test images only (for quick checks).")
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
    parser = build_parser()
    args = parser.parse_args(argv)
    problems = [f"--{name} must be a positive integer, got {getattr(args, name)}"
                for name in ("num_epochs", "train_batch_size", "embedding_size") if getattr(args, name) < 1]
    for name in ("max_train_samples", "max_eval_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            problems.append(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if len(args.hidden_sizes) != len(args.depths) or min(args.hidden_sizes + args.depths) < 1:
        problems.append(f"--hidden_sizes {args.hidden_sizes} and --depths {args.depths} must be positive and "
                        "of the same length")
    if not args.learning_rate > 0:
        problems.append(f"--learning_rate must be positive, got {args.learning_rate}")
    if args.weight_decay < 0:
        problems.append(f"--weight_decay must be ≥ 0, got {args.weight_decay}")
    if args.max_train_minutes is not None and args.max_train_minutes <= 0:
        problems.append(f"--max_train_minutes must be positive, got {args.max_train_minutes}")
    if problems:
        parser.error("; ".join(problems))
    return args


def train_classifier(args: argparse.Namespace) -> dict:
    """
    Train the classifier on the MNIST training split, measure its accuracy on the test split and save it.

    Args:
        args: the options of `build_parser()`.

    Returns:
        The training record also written to `output_dir/training_results.json` (test accuracy, epochs, wall time,
        command line, options and model config) on the main process, None on the others.
    """
    output_dir = Path(args.output_dir)
    run_started = time.perf_counter()
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    with accelerator.main_process_first():  # the main process downloads missing files, the others then read them
        train_images, train_labels = load_mnist(args.data_dir, "train")
        test_images, test_labels = load_mnist(args.data_dir, "test")
    train_images, train_labels = train_images[: args.max_train_samples], train_labels[: args.max_train_samples]
    test_images, test_labels = test_images[: args.max_eval_samples], test_labels[: args.max_eval_samples]

    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model, image_processor = build_classifier(args.hidden_sizes, args.depths, args.embedding_size)
    set_seed(args.seed, device_specific=True)  # then different augmentations per rank
    model = model.to(memory_format=torch.channels_last)  # ≈ 30% faster convolutions on CPU
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    dataloader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(train_images, train_labels), batch_size=args.train_batch_size, shuffle=True,
        drop_last=True, generator=torch.Generator().manual_seed(args.seed),
    )
    steps_per_epoch = math.ceil(len(dataloader) / accelerator.num_processes)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_images)} training images make no full batch of {args.train_batch_size}.")
    max_train_steps = args.num_epochs * steps_per_epoch
    # accelerate steps a prepared scheduler once per process at every optimiser step, hence the factor.
    lr_scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.learning_rate, total_steps=max_train_steps * accelerator.num_processes, pct_start=0.2,
    )
    model, optimizer, dataloader, lr_scheduler = accelerator.prepare(model, optimizer, dataloader, lr_scheduler)
    accelerator.print(
        f"{len(train_images)} training images, {accelerator.unwrap_model(model).num_parameters()} parameters, "
        f"{accelerator.num_processes} process(es) ({accelerator.distributed_type}), {max_train_steps} steps."
    )

    progress = tqdm(total=max_train_steps, desc="train", disable=not accelerator.is_local_main_process)
    started = time.perf_counter()
    global_step, images_seen, epochs_completed, out_of_time = 0, 0, 0, False
    for epoch in range(args.num_epochs):
        dataloader.set_epoch(epoch)
        model.train()
        for images, labels in dataloader:
            pixels = to_unit_range(images)
            if args.augment:
                pixels = random_affine(pixels)
            pixel_values = normalize(pixels, image_processor).contiguous(memory_format=torch.channels_last)
            logits = model(pixel_values=pixel_values).logits
            loss = F.cross_entropy(logits.float(), labels)
            accelerator.backward(loss)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            images_seen += len(images) * accelerator.num_processes
            progress.update(1)
            if global_step % 10 == 0:
                progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}",
                                     img_s=f"{images_seen / (time.perf_counter() - started):.0f}")
            if args.max_train_minutes is not None:
                # All ranks must stop at the same step: the first rank to run out of time stops them all.
                late = float(time.perf_counter() - started >= 60 * args.max_train_minutes)
                out_of_time = bool(accelerator.reduce(torch.tensor(late, device=accelerator.device), reduction="max"))
                if out_of_time:
                    break
        if out_of_time:
            break
        epochs_completed += 1
    progress.close()
    train_seconds = time.perf_counter() - started

    record = None
    if accelerator.is_main_process:
        classifier = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
        classifier = classifier.to(memory_format=torch.contiguous_format)
        predicted = DigitClassifier(classifier, image_processor).predict(test_images)
        correct = int((predicted == test_labels).sum())
        record = {
            "test_accuracy": correct / len(test_labels),
            "test_correct": correct,
            "test_total": len(test_labels),
            "epochs_completed": epochs_completed,
            "num_epochs": args.num_epochs,
            "global_step": global_step,
            "stopped_by_time_limit": out_of_time,
            "train_minutes": round(train_seconds / 60, 2),
            "wall_minutes": round((time.perf_counter() - run_started) / 60, 2),  # with data loading and evaluation
            "train_images_per_second": round(images_seen / train_seconds, 1),
            "command": " ".join(["scripts/train_classifier.py", *sys.argv[1:]]),
            "args": vars(args),
            "config": classifier.config.to_dict(),
            "num_parameters": classifier.num_parameters(),
            "num_processes": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "mixed_precision": accelerator.mixed_precision,
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
        }
        output_dir.mkdir(parents=True, exist_ok=True)
        classifier.save_pretrained(output_dir)
        image_processor.save_pretrained(output_dir)
        (output_dir / "training_results.json").write_text(json.dumps(record, indent=2) + "\n")
        accelerator.print(f"Test accuracy {correct}/{len(test_labels)} = {record['test_accuracy']:.2%}; saved to "
                          f"{output_dir}.")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return record


def main(argv: list[str] | None = None) -> None:
    train_classifier(parse_args(argv))
