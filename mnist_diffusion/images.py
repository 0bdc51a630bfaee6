"""Turning generated digits into pictures: grids with optional row labels, upscaled for the eye."""

from collections.abc import Sequence

from PIL import Image, ImageDraw


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
