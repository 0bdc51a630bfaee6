"""MNIST from its four IDX files: verified, optionally downloaded, scaled to [-1, 1].

The files are found by their canonical names, gzip-compressed as distributed (`train-images-idx3-ubyte.gz`) or plain
(`train-images-idx3-ubyte`), and verified by the md5 of their IDX content, the uncompressed bytes: a plain or
re-compressed copy of the canonical files passes, anything else does not. A data set in the same format that is not
MNIST (a generated one for tests, say) declares the md5s of its own files in a `checksums.json` beside them.
"""

import contextlib
import gzip
import hashlib
import http.client
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .images import pixels_to_model_range

# A public mirror of the original files (the one torchvision uses); override with MNIST_MIRROR.
DEFAULT_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
# In a data folder, this file declares a data set other than MNIST: {"train-images-idx3-ubyte": "<md5>", ...}, the md5
# of each uncompressed IDX file, used instead of the canonical one.
CHECKSUMS_FILE = "checksums.json"


@dataclass(frozen=True)
class IDXFile:
    """One canonical MNIST file: its name as distributed (gzip-compressed), the md5 of its IDX content, its magic and
    its number of items."""

    name: str
    md5: str
    magic: int
    count: int

    @property
    def plain_name(self) -> str:
        """The name of the uncompressed file, e.g. `train-images-idx3-ubyte`."""
        return self.name.removesuffix(".gz")


# The md5s of the uncompressed IDX bytes. Those of the distributed .gz files (f68b3c2d..., d53e105e..., 9fb629c4...,
# ec29112d...) identify one particular compression of them, which a re-compressed copy does not reproduce.
MNIST_FILES = {
    "train": (
        IDXFile("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb", 0x00000803, 60000),
        IDXFile("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624", 0x00000801, 60000),
    ),
    "test": (
        IDXFile("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea", 0x00000803, 10000),
        IDXFile("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637", 0x00000801, 10000),
    ),
}


class MNISTDataError(RuntimeError):
    """A data file is missing, corrupt or could not be downloaded; the message says which and where."""


def read_idx_bytes(path: str | os.PathLike, compressed: bool | None = None) -> bytes:
    """
    The IDX bytes of a file, decompressed if it is gzip-compressed.

    Args:
        path: the file.
        compressed: whether the file is gzip-compressed; by default, whether its name ends in `.gz`.

    Returns:
        `bytes`: the uncompressed IDX file.
    """
    path = Path(path)
    compressed = path.suffix == ".gz" if compressed is None else compressed
    try:
        if not compressed:
            return path.read_bytes()
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as error:
        raise MNISTDataError(f"{path} is not a readable {'gzip ' if compressed else ''}file ({error}).") from error


def parse_idx(raw: bytes, path: str | os.PathLike) -> np.ndarray:
    """
    Parse IDX bytes: a big-endian header (magic 0x0803 for images or 0x0801 for labels, then one 32-bit size per
    dimension) and raw uint8 data, exactly as many bytes as the sizes announce.

    Args:
        raw: the uncompressed IDX file.
        path: the file `raw` comes from, for the error messages.

    Returns:
        `np.ndarray` of uint8, shaped `(count, rows, columns)` for images and `(count,)` for labels.
    """
    if len(raw) < 8 or raw[:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] not in (1, 3):
        raise MNISTDataError(f"{path} does not start with an IDX header of uint8 data (magic 0x0801 or 0x0803).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MNISTDataError(f"{path}: the IDX header is cut short ({len(raw)} bytes, needs {header}).")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) - header != int(np.prod(shape)):
        raise MNISTDataError(
            f"{path}: the header announces {shape} = {int(np.prod(shape))} bytes of data, the file has {len(raw) - header}."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """
    Read an IDX file, gzip-compressed (a name ending in `.gz`) or plain.

    Returns:
        `np.ndarray` of uint8, shaped `(count, rows, columns)` for images and `(count,)` for labels.
    """
    return parse_idx(read_idx_bytes(path), path)


def expected_checksums(data_dir: Path) -> tuple[dict[str, str], str]:
    """
    The md5 that the IDX content of each file in `data_dir` must have, by the file's plain name
    (`train-images-idx3-ubyte`): the canonical MNIST files', or those that `data_dir/checksums.json` declares.

    Returns:
        `tuple[dict[str, str], str]`: the md5s, and where they come from (for the error messages).
    """
    declared = data_dir / CHECKSUMS_FILE
    if not declared.is_file():
        return {spec.plain_name: spec.md5 for specs in MNIST_FILES.values() for spec in specs}, "the canonical file"
    try:
        checksums = json.loads(declared.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MNISTDataError(f"{declared.resolve()} is not readable JSON ({error}).") from error
    if not isinstance(checksums, dict) or not all(
        isinstance(md5, str) and re.fullmatch(r"[0-9a-f]{32}", md5) for md5 in checksums.values()
    ):
        raise MNISTDataError(
            f"{declared.resolve()} must map each IDX file to the md5 of its uncompressed bytes, e.g. "
            '{"train-images-idx3-ubyte": "<32 hexadecimal digits>", ...}.'
        )
    return checksums, f"declared in {declared.resolve()}"


def describe_training_data(data_dir: str | os.PathLike) -> dict:
    """
    What a run trained on, for its record and its model card: `"MNIST"` (the canonical files, which loading checked by
    their md5s) or the data set that the folder's `checksums.json` declares, and the number of training images (read
    from the labels file's IDX header).
    """
    data_dir = Path(data_dir)
    labels = find_idx_file(data_dir, MNIST_FILES["train"][1])
    num_images = None if labels is None else int.from_bytes(read_idx_bytes(labels)[4:8], "big")
    own = (data_dir / CHECKSUMS_FILE).is_file()
    return {"data_set": f"the data set declared in {data_dir.name}/{CHECKSUMS_FILE}" if own else "MNIST",
            "num_train_images": num_images}


def find_idx_file(data_dir: Path, spec: IDXFile) -> Path | None:
    """The file of `spec` in `data_dir`, gzip-compressed under its canonical name or plain without `.gz` (the
    compressed one if both are there); None if there is neither."""
    for name in (spec.name, spec.plain_name):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def download_file(url: str, destination: Path, expected_md5: str, timeout: float = 60.0) -> None:
    """
    Download `url` to `destination` atomically: the bytes go to a temporary file in the same folder, which replaces
    `destination` only once the md5 of its IDX content (decompressed if `destination` ends in `.gz`) matches
    `expected_md5`. The folder is made once the server answers. On any failure nothing is left behind: neither the
    temporary file nor a folder made for it.
    """
    made = [folder for folder in (destination.parent, *destination.parent.parents) if not folder.exists()]
    temporary = None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            destination.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part",
                                                 dir=destination.parent)
            with os.fdopen(handle, "wb") as out:
                shutil.copyfileobj(response, out)
        try:
            actual = hashlib.md5(read_idx_bytes(temporary, compressed=destination.suffix == ".gz")).hexdigest()
        except MNISTDataError as error:
            raise MNISTDataError(
                f"Downloaded {url} is damaged (expected md5 {expected_md5}); not saved: {error}"
            ) from error
        if actual != expected_md5:
            raise MNISTDataError(f"Downloaded {url} has md5 {actual}, expected {expected_md5}; not saved.")
        os.replace(temporary, destination)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        raise MNISTDataError(f"Could not download {url} to {destination}: {error}.") from error
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.remove(temporary)
        if not destination.exists():
            for folder in made:  # the deepest first; one that something else has filled meanwhile is kept
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _verified_split(data_dir: Path, split: str, download: bool, mirror: str | None,
                    verify_md5: bool) -> list[tuple[Path, bytes]]:
    """The images and the labels file of `split`, found (or downloaded) and verified, each with its IDX bytes: a
    file is read once, for the check and for the parsing."""
    if split not in MNIST_FILES:
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}.")
    if data_dir.exists() and not data_dir.is_dir():
        raise MNISTDataError(f"The MNIST data folder {data_dir.resolve()} is a file; pass the folder of the IDX files.")
    mirror = mirror or os.environ.get("MNIST_MIRROR") or DEFAULT_MIRROR
    checksums, origin = expected_checksums(data_dir)
    files = []
    for spec in MNIST_FILES[split]:
        expected = checksums.get(spec.plain_name)
        if expected is None:
            raise MNISTDataError(f"{(data_dir / CHECKSUMS_FILE).resolve()} declares no md5 for {spec.plain_name}.")
        path = find_idx_file(data_dir, spec)
        if path is None and download:
            path = data_dir / spec.name
            try:
                download_file(mirror.rstrip("/") + "/" + spec.name, path, expected)
            except MNISTDataError as error:
                raise MNISTDataError(f"MNIST file {spec.name} is missing from {data_dir.resolve()}. {error}") from error
        if path is None:
            raise MNISTDataError(
                f"MNIST file {spec.name} is missing: looked for it, and for {spec.plain_name} (uncompressed), in "
                f"{data_dir.resolve()}."
            )
        raw = read_idx_bytes(path)
        if verify_md5 and (actual := hashlib.md5(raw).hexdigest()) != expected:
            raise MNISTDataError(
                f"MNIST file {path.resolve()} is corrupt: its IDX content has md5 {actual}, expected {expected} "
                f"({origin})."
            )
        files.append((path, raw))
    return files


def ensure_mnist(data_dir: str | os.PathLike, split: str = "train", download: bool = True, mirror: str | None = None,
                 verify_md5: bool = True) -> tuple[Path, Path]:
    """
    Make sure the IDX files of `split` are in `data_dir` and intact, downloading the missing ones when `download`.

    Args:
        data_dir: the folder with the IDX files, gzip-compressed (`.gz`) or plain.
        split: `"train"` or `"test"`.
        download: fetch missing files from `mirror` (or `$MNIST_MIRROR`, or the default public mirror), verify
            their md5 and keep them in `data_dir` for next time.
        verify_md5: check the md5 of each file's IDX content, against the canonical file's or the one that
            `data_dir/checksums.json` declares (a fraction of a second).

    Returns:
        The paths of the images file and the labels file.
    """
    (images_path, _), (labels_path, _) = _verified_split(Path(data_dir), split, download, mirror, verify_md5)
    return images_path, labels_path


def load_mnist(data_dir: str | os.PathLike, split: str = "train", download: bool = True,
               verify_md5: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Load one split of MNIST, or of the data set in its format that `data_dir/checksums.json` declares.

    Returns:
        `(images, labels)`: uint8 images of shape `(N, 28, 28)` and int64 labels of shape `(N,)`.
    """
    (images_path, images_raw), (labels_path, labels_raw) = _verified_split(
        Path(data_dir), split, download, None, verify_md5
    )
    images, labels = parse_idx(images_raw, images_path), parse_idx(labels_raw, labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(images) != len(labels):
        raise MNISTDataError(
            f"{images_path} and {labels_path} do not pair up as 28×28 images and their labels: images {images.shape}, "
            f"labels {labels.shape}."
        )
    if labels.max(initial=0) > 9:
        raise MNISTDataError(f"{labels_path} holds label {labels.max()}, outside 0–9.")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


class MNISTDataset(torch.utils.data.Dataset):
    """MNIST as `(image, label)` pairs, images as float tensors `(1, 28, 28)` in [-1, 1], held in memory."""

    def __init__(self, data_dir: str | os.PathLike, split: str = "train", download: bool = True):
        images, self.labels = load_mnist(data_dir, split, download=download)
        self.images = pixels_to_model_range(images)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]
