"""The evaluation classifier: a transformers RegNet trained on MNIST, the MNIST counterpart of FID's Inception network.

It is an ordinary `RegNetForImageClassification` (1 grey channel, labels "0".."9") saved with `save_pretrained`
next to a standard `ConvNextImageProcessor`, so that anyone classifies a digit with transformers alone:

    processor = AutoImageProcessor.from_pretrained("pretrained/mnist-classifier")
    model = AutoModelForImageClassification.from_pretrained("pretrained/mnist-classifier")
    logits = model(**processor(Image.open("digit.png").convert("L"), return_tensors="pt")).logits

Its pooled penultimate features (`RegNetModel.pooler_output`, 128 numbers per image) are the space where
`evaluation/scores.py` measures the Fréchet distance. `DigitClassifier` runs the same model on whole tensors of digits.
`training/classifier.py` trains it (`scripts/train_classifier.py`).

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

import math
from pathlib import Path

import torch

try:
    from transformers import (AutoImageProcessor, AutoModelForImageClassification, ConvNextImageProcessorPil,
                              RegNetConfig, RegNetForImageClassification)
except ImportError as error:  # transformers is an extra of the evaluation, not a requirement of the pipeline
    raise ImportError(
        "The evaluation classifier needs `transformers`: pip install 'mnist-diffusion[eval]'."
    ) from error

from ..images import IMAGE_SIZE, digits_to_unit_range

DIGITS = [str(digit) for digit in range(10)]


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


def normalize(unit_images: torch.Tensor, image_processor) -> torch.Tensor:
    """The image processor's normalisation, in torch: [0, 1] images → the `pixel_values` the model was trained on."""
    mean = torch.tensor(image_processor.image_mean, dtype=unit_images.dtype, device=unit_images.device)
    std = torch.tensor(image_processor.image_std, dtype=unit_images.dtype, device=unit_images.device)
    return (unit_images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


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
        unit_images = digits_to_unit_range(images)
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
