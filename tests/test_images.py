"""Tests of `mnist_diffusion/images.py`: the conversions between pixel ranges, and the grid every figure, the CLI and
the demo draw digits on."""

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_diffusion.images import digits_to_unit_range, make_grid, model_range_to_pil, pixels_to_model_range


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


def test_pixels_to_model_range_maps_0_and_255_to_minus_one_and_one():
    out = pixels_to_model_range(torch.tensor([[[0, 255], [127, 128]]], dtype=torch.uint8))
    assert out.shape == (1, 1, 2, 2) and out.dtype == torch.float32
    assert out[0, 0, 0].tolist() == [-1.0, 1.0]
    assert abs(out[0, 0, 1, 0].item()) < 0.01 and abs(out[0, 0, 1, 1].item()) < 0.01


def test_model_range_to_pil_inverts_pixels_to_model_range_and_clamps():
    pixels = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pictures = model_range_to_pil(pixels_to_model_range(pixels))
    assert [p.mode for p in pictures] == ["L"] * 3
    assert np.array_equal(np.stack([np.asarray(p) for p in pictures]), pixels.numpy())
    (clamped,) = model_range_to_pil(torch.tensor([[[[-3.0, 5.0]]]]))
    assert np.asarray(clamped).tolist() == [[0, 255]]


def test_digits_to_unit_range_takes_uint8_pixels_and_unit_floats():
    pixels = torch.tensor([[[0] * 28] * 27 + [[255] * 28]], dtype=torch.uint8)
    out = digits_to_unit_range(pixels)
    assert out.shape == (1, 1, 28, 28) and out.dtype == torch.float32
    assert out.min().item() == 0.0 and out.max().item() == 1.0
    floats = torch.rand(2, 1, 28, 28)
    assert torch.equal(digits_to_unit_range(floats), floats)


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.zeros(2, 28, 27), "shaped"),
        (torch.zeros(2, 3, 28, 28), "shaped"),
        (torch.zeros(2, 28, 28, dtype=torch.int64), "dtype"),
        (torch.full((1, 28, 28), -0.5), "need `images / 2 \\+ 0.5`"),
    ],
)
def test_digits_to_unit_range_names_what_is_wrong(images, message):
    with pytest.raises(ValueError, match=message):
        digits_to_unit_range(images)
