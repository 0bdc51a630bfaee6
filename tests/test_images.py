"""Tests of `mnist_diffusion/images.py`: the grid every figure, the CLI and the demo draw digits on."""

import numpy as np
import pytest
from PIL import Image

from mnist_diffusion.images import make_grid


def digit(value: int) -> Image.Image:
    return Image.fromarray(np.full((28, 28), value, dtype=np.uint8), mode="L")


def test_make_grid_places_each_image_row_by_row_with_padding():
    images = [digit(10 * (i + 1)) for i in range(6)]
    grid = np.asarray(make_grid(images, rows=2, padding=2))
    assert grid.shape == (2 * 30 + 2, 3 * 30 + 2)
    for index in range(6):
        row, column = divmod(index, 3)
        top, left = 2 + 30 * row, 2 + 30 * column
        assert (grid[top : top + 28, left : left + 28] == 10 * (index + 1)).all()
    assert grid[0].max() == 0 and grid[:, 0].max() == 0  # the padding stays black


def test_make_grid_upscales_nearest_neighbour_and_leaves_room_for_row_labels():
    plain = make_grid([digit(200)] * 2, rows=2, scale=3)
    assert plain.size == (3 * 32, 3 * 62) and set(np.unique(np.asarray(plain))) == {0, 200}
    labelled = make_grid([digit(200)] * 2, rows=2, row_labels=["7", "10"])
    assert labelled.width == 32 + max(12, 6 * 2 + 4) and np.asarray(labelled)[:, :16].max() > 128  # the label ink


@pytest.mark.parametrize("rows, labels, message", [(0, None, "do not fill 0 rows"), (4, None, "do not fill 4 rows"),
                                                   (2, ["1"], "1 row labels for 2 rows")])
def test_make_grid_refuses_a_layout_that_does_not_fit(rows, labels, message):
    with pytest.raises(ValueError, match=message):
        make_grid([digit(1)] * 6, rows=rows, row_labels=labels)
