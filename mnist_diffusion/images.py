"""
The package's one home for image conversions, each named for its direction, and for the picture grids.

Three value ranges meet here: MNIST's uint8 pixels in 0–255, the diffusion model's floats in [-1, 1], and floats in
[0, 1] (what the pipelines return with `output_type="pt"` and what the evaluation classifier reads). Two converters
live elsewhere on purpose: `MNISTDDPMPipeline.postprocess` (diffusers' name for model range → output) and
`pipeline_mnist_inpaint.grey_images_to_unit_range` (user input → [0, 1]) belong to the pipeline files, which the Hub
loads as remote code without this package.
"""

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw

IMAGE_SIZE = 28


def pixels_to_model_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (N, H, W) → float images (N, 1, H, W) in [-1, 1], the range the diffusion model works in."""
    return pixels.float().div(127.5).sub(1.0).unsqueeze(1)


def model_range_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Images in the model's range [-1, 1], shaped (N, 1, H, W) → PIL images in mode "L"."""
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(p[0].numpy(), mode="L") for p in pixels]


def digits_to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """
    Digits → float images (N, 1, 28, 28) in [0, 1]: uint8 pixels (N, 28, 28) are divided by 255, float images (what
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


def make_grid(
    images: Sequence[Image.Image],
    rows: int,
    scale: int = 1,
    padding: int = 2,
    row_labels: Sequence[str] | None = None,
) -> Image.Image:
    """
    Lay `images` out row by row on a black canvas.

    Args:
        images: equally sized images, `rows × columns` of them, row-major.
        rows: number of rows; the column count is `len(images) // rows`.
        scale: nearest-neighbour upscaling factor (a 28×28 digit is a speck at its native size).
        padding: pixels between images, before scaling.
        row_labels: optional text drawn left of each row (e.g. the digit).

    Returns:
        `PIL.Image` in mode "L".
    """
    if rows < 1 or len(images) % rows:
        raise ValueError(f"{len(images)} images do not fill {rows} rows evenly.")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"Got {len(row_labels)} row labels for {rows} rows.")
    columns = len(images) // rows
    width, height = images[0].size
    # Room for the labels in PIL's default font (about 6 pixels a character).
    margin = max(12, 6 * max(len(str(label)) for label in row_labels) + 4) if row_labels is not None else 0
    grid = Image.new("L", (margin + columns * (width + padding) + padding, rows * (height + padding) + padding))
    draw = ImageDraw.Draw(grid)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid.paste(image.convert("L"), (margin + padding + column * (width + padding), padding + row * (height + padding)))
    for row, label in enumerate(row_labels or []):
        draw.text((2, padding + row * (height + padding) + height // 2 - 5), str(label), fill=255)
    if scale != 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    return grid
