"""
The package's one home for image conversions, each named for its direction, and for the picture grids.

Three value ranges meet here: MNIST's uint8 pixels in 0–255, the diffusion model's floats in [-1, 1], and floats in
[0, 1] (what the pipelines return with `output_type="pt"` and what the evaluation classifier reads). One converter
lives elsewhere on purpose: `MNISTDDPMPipeline.postprocess` (diffusers' name for model range → output) belongs to the
generation pipeline's file, which a Hub repo carries as remote code without this package.
"""

from collections.abc import Sequence

import numpy as np
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


def read_digits(images, name: str = "images", refuse_colour: bool = False) -> torch.Tensor:
    """
    The package's one reader of digits, in any form the pipelines take or return → a tensor (N, 1, 28, 28) of uint8
    pixels (as they are) or of floats in [0, 1]: a PIL image or a list of them (read in mode "L"), or a tensor or
    numpy array shaped (28, 28), (N, 28, 28), (N, 1, 28, 28) or (N, 28, 28, 1) (`output_type="np"`), or a list of
    such tensors or arrays. A bool array is read as floats 0 and 1.

    Args:
        images: the digits.
        name (`str`, defaults to `"images"`): the argument's name, for the messages.
        refuse_colour (`bool`, defaults to False): refuse (3, 28, 28) and (4, 28, 28), which may as well be one RGB or
            RGBA image in torch's channels-first layout (an inpainting `image`); elsewhere they are 3 or 4 digits.

    Raises:
        `ValueError`: a form, shape, dtype or range that is not one of these, named with `name`.
    """
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError(f"`{name}` must hold at least one digit, got an empty list.")
        if not all(isinstance(image, Image.Image) for image in images):
            parts = [read_digits(image, name, refuse_colour) for image in images]
            if len({part.dtype for part in parts}) > 1:
                raise ValueError(f"`{name}` must be a list of digits of one dtype, got "
                                 f"{sorted({str(p.dtype) for p in parts})}.")
            return torch.cat(parts)
        images = np.stack([np.asarray(image.convert("L")) for image in images])[:, None]  # (N, 1, 28, 28)
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not torch.is_tensor(images):
        raise ValueError(f"`{name}` must be a PIL image (or a list of them), a numpy array or a tensor, or a list of "
                         f"these, got {type(images).__name__}.")
    shape = tuple(images.shape)
    if refuse_colour and images.ndim == 3 and shape[0] in (3, 4):
        raise ValueError(
            f"`{name}` of shape {shape} is ambiguous: {shape[0]} grey images, or one colour image? Pass grey images as "
            f"(N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}) (`{name}[:, None]`), and convert colour images to grey first."
        )
    if shape == (IMAGE_SIZE, IMAGE_SIZE, 1):
        images = images[None]  # one digit, channels last: an element of `output_type="np"`
    if images.ndim == 2:
        images = images[None]
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim == 4 and images.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE, 1):
        images = images.permute(0, 3, 1, 2)  # channels last, as numpy images are
    if images.ndim != 4 or images.shape[1:] != (1, IMAGE_SIZE, IMAGE_SIZE) or len(images) == 0:
        raise ValueError(f"`{name}` must be 28×28 grey digits shaped (N, 28, 28) or (N, 1, 28, 28), got {shape} (N ≥ 1; "
                         "channels last, (N, 28, 28, 1), and one (28, 28) digit are read too). Resize first: nothing "
                         "is resized silently.")
    if images.dtype == torch.uint8:
        return images
    if images.dtype == torch.bool:
        return images.float()
    if not images.is_floating_point():
        raise ValueError(f"`{name}` must be uint8 pixels (0–255) or float images in [0, 1], got dtype {images.dtype}.")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"`{name}` holds NaN or infinite values; float images must lie in [0, 1].")
    if images.min() < 0 or images.max() > 1:
        raise ValueError(
            f"Float `{name}` must be in [0, 1], got values in [{images.min():.3f}, {images.max():.3f}] (floats must lie "
            "in [0, 1], uint8 pixels in 0–255; images in the diffusion model's [-1, 1] need `images / 2 + 0.5` first)."
        )
    return images


def digits_to_unit_range(images, name: str = "images", refuse_colour: bool = False) -> torch.Tensor:
    """
    Digits, as [`read_digits`] takes them → float images (N, 1, 28, 28) in [0, 1]: uint8 pixels are divided by 255,
    float images (what `MNISTDDPMPipeline(..., output_type="pt")` returns) are taken as they are.
    """
    images = read_digits(images, name, refuse_colour)
    return images.float() / 255 if images.dtype == torch.uint8 else images.float()


# Every MNIST digit has a pixel at level 254 or 255; a digit whose brightest pixel is below this level is not a scale
# the data can have, but a scale mistake: binarised digits in {0, 1} as uint8, or floats divided by 65535.
MIN_BRIGHTEST_LEVEL = 16


def digits_to_pixel_levels(images) -> torch.Tensor:
    """
    Digits, as [`read_digits`] takes them → their 256 pixel levels, an int64 CPU tensor (N, 1, 28, 28) in 0–255: uint8
    pixels as they are, floats in [0, 1] rounded to the nearest level.

    Raises:
        `ValueError`: besides [`read_digits`]' refusals, a digit that is not blank but whose brightest pixel is below
            level 16: a scale mistake, named with the values seen and what is expected. A blank digit (all 0) is valid.
    """
    digits = read_digits(images).cpu()  # the likelihood's tables and draws live on the CPU; batches go to the UNet
    levels = digits.long() if digits.dtype == torch.uint8 else (digits.double() * 255).round().long()
    # On the values as given, before rounding: floats far below [0, 1]'s scale would round to a blank digit.
    brightest = digits.flatten(1).amax(1).double() * (1 if digits.dtype == torch.uint8 else 255)
    faint = ((brightest > 0) & (brightest < MIN_BRIGHTEST_LEVEL)).nonzero()
    if len(faint):
        index = faint[0].item()
        seen = digits[index].max().item()
        raise ValueError(
            f"Digit {index} is too dark to be read as pixel levels: its brightest value is {seen:g} ({digits.dtype}), "
            f"level {brightest[index].item():.3g} of 0–255, where every MNIST digit reaches 254 or 255. uint8 pixels "
            "are read as levels 0–255 (binarised digits in {0, 1} need `* 255`), float images as [0, 1] (1 is "
            "white). A blank digit (all 0) is valid."
        )
    return levels


def pixel_levels_to_model_range(levels: torch.Tensor) -> torch.Tensor:
    """Pixel levels 0–255 → the model's [−1, 1], the centres of the decoder's 256 bins."""
    return levels.float() / 127.5 - 1


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
