"""A small generated stand-in for MNIST, in the real IDX format, for the tests that need data files but not real digits,
and for the tutorial (docs/tutorial.ipynb) on a machine without the real files.

Each image is its label drawn as a seven-segment digit, at a random position and size, with a random stroke width
and a little noise: a class that a conditional model can learn and a figure can show, generated in milliseconds. The
four files get the canonical names, gzip-compressed like the originals, and `checksums.json` beside them declares
them a data set of their own (see `mnist_diffusion.data.CHECKSUMS_FILE`): the loader verifies them against those
checksums, as it verifies the real files against the canonical ones.
"""

import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from ..data import CHECKSUMS_FILE, MNIST_FILES

# The segments of each digit: a top, b top right, c bottom right, d bottom, e bottom left, f top left, g middle.
SEGMENTS = {0: "abcdef", 1: "bc", 2: "abdeg", 3: "abcdg", 4: "bcfg", 5: "acdfg", 6: "acdefg", 7: "abc",
            8: "abcdefg", 9: "abcdfg"}


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """Uncompressed IDX bytes: big-endian magic (0x00000803 images, 0x00000801 labels), one size per dimension, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x00000800 | array.ndim if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def draw_digit(digit: int, rng: np.random.Generator) -> np.ndarray:
    """One 28×28 uint8 image of `digit` in seven segments, white on black like MNIST."""
    width, height, stroke = rng.integers(8, 13), rng.integers(14, 21), rng.integers(2, 4)
    left, top = rng.integers(4, 28 - 4 - width + 1), rng.integers(3, 28 - 3 - height + 1)
    right, bottom, middle = left + width, top + height, top + height // 2
    boxes = {  # (row from, row to, column from, column to) of each segment's stroke
        "a": (top, top + stroke, left, right), "d": (bottom - stroke, bottom, left, right),
        "g": (middle - stroke // 2, middle - stroke // 2 + stroke, left, right),
        "f": (top, middle, left, left + stroke), "e": (middle, bottom, left, left + stroke),
        "b": (top, middle, right - stroke, right), "c": (middle, bottom, right - stroke, right),
    }
    image = np.zeros((28, 28), np.float32)
    for segment in SEGMENTS[digit]:
        row_from, row_to, column_from, column_to = boxes[segment]
        image[row_from:row_to, column_from:column_to] = 1.0
    image = image * rng.uniform(0.8, 1.0) + rng.normal(0.0, 0.05, image.shape)
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def synthetic_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` images `(count, 28, 28)` and their labels `(count,)`, as uint8, every digit equally often."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % 10).astype(np.uint8)
    return np.stack([draw_digit(int(label), rng) for label in labels]), labels


def write_synthetic_mnist(folder: Path, train_count: int = 320, test_count: int = 100, seed: int = 0) -> Path:
    """
    Write a synthetic MNIST to `folder`: the four IDX files under their canonical names, gzip-compressed, and the
    `checksums.json` that declares their md5s (over the uncompressed IDX bytes) to the loader.

    Returns:
        `Path`: `folder`, to pass as `data_dir` or `--data_dir`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    checksums = {}
    for index, (split, count) in enumerate((("train", train_count), ("test", test_count))):
        images_spec, labels_spec = MNIST_FILES[split]
        for spec, array in zip((images_spec, labels_spec), synthetic_digits(count, seed + index)):
            payload = idx_bytes(array)
            (folder / spec.name).write_bytes(gzip.compress(payload, mtime=0))
            checksums[spec.name.removesuffix(".gz")] = hashlib.md5(payload).hexdigest()
    (folder / CHECKSUMS_FILE).write_text(json.dumps(checksums, indent=2) + "\n")
    return folder
