"""MNIST from its four canonical IDX files: verified, optionally downloaded, scaled to [-1, 1]."""

import gzip
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# A public mirror of the original files (the one torchvision uses); override with MNIST_MIRROR.
DEFAULT_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"


@dataclass(frozen=True)
class IDXFile:
    name: str
    md5: str
    magic: int
    count: int


MNIST_FILES = {
    "train": (
        IDXFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 0x00000803, 60000),
        IDXFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 0x00000801, 60000),
    ),
    "test": (
        IDXFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 0x00000803, 10000),
        IDXFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 0x00000801, 10000),
    ),
}


class MNISTDataError(RuntimeError):
    """A data file is missing, corrupt or could not be downloaded; the message says which and where."""


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """
    Read a gzip-compressed IDX file: a big-endian header (magic 0x0803 for images or 0x0801 for labels, then one
    32-bit size per dimension) and raw uint8 data.

    Returns:
        `np.ndarray` of uint8, shaped `(count, rows, columns)` for images and `(count,)` for labels.
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as error:
        raise MNISTDataError(f"{path} is not a readable gzip file ({error}).") from error
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


def _check_file(path: Path, spec: IDXFile, verify_md5: bool) -> None:
    if not path.is_file():
        raise MNISTDataError(f"MNIST file {spec.name} is missing: looked for {path.resolve()}.")
    if verify_md5:
        actual = md5sum(path)
        if actual != spec.md5:
            raise MNISTDataError(
                f"MNIST file {path.resolve()} is corrupt: md5 {actual}, expected {spec.md5} (the canonical file)."
            )


def download_file(url: str, destination: Path, expected_md5: str, timeout: float = 60.0) -> None:
    """
    Download `url` to `destination` atomically: the bytes go to a temporary file in the same folder, which replaces
    `destination` only once its md5 matches. On any failure nothing is left behind.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out)
        actual = md5sum(Path(temporary))
        if actual != expected_md5:
            raise MNISTDataError(f"Downloaded {url} has md5 {actual}, expected {expected_md5}; not saved.")
        os.replace(temporary, destination)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        raise MNISTDataError(f"Could not download {url} to {destination}: {error}.") from error
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def ensure_mnist(data_dir: str | os.PathLike, split: str = "train", download: bool = True, mirror: str | None = None,
                 verify_md5: bool = True) -> tuple[Path, Path]:
    """
    Make sure the IDX files of `split` are in `data_dir` and intact, downloading the missing ones when `download`.

    Args:
        data_dir: the folder with the `.gz` files.
        split: `"train"` or `"test"`.
        download: fetch missing files from `mirror` (or `$MNIST_MIRROR`, or the default public mirror), verify
            their md5 and keep them in `data_dir` for next time.
        verify_md5: check each file against the canonical md5 (a fraction of a second).

    Returns:
        The paths of the images file and the labels file.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}.")
    data_dir = Path(data_dir)
    mirror = mirror or os.environ.get("MNIST_MIRROR") or DEFAULT_MIRROR
    paths = []
    for spec in MNIST_FILES[split]:
        path = data_dir / spec.name
        if download and not path.exists():
            try:
                download_file(mirror.rstrip("/") + "/" + spec.name, path, spec.md5)
            except MNISTDataError as error:
                raise MNISTDataError(f"MNIST file {spec.name} is missing from {data_dir.resolve()}. {error}") from error
        _check_file(path, spec, verify_md5)
        paths.append(path)
    return paths[0], paths[1]


def load_mnist(data_dir: str | os.PathLike, split: str = "train", download: bool = True,
               verify_md5: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Load one split of MNIST.

    Returns:
        `(images, labels)`: uint8 images of shape `(N, 28, 28)` and int64 labels of shape `(N,)`.
    """
    images_path, labels_path = ensure_mnist(data_dir, split, download=download, verify_md5=verify_md5)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise MNISTDataError(
            f"{images_path} and {labels_path} do not pair up: images {images.shape}, labels {labels.shape}."
        )
    if labels.max(initial=0) > 9:
        raise MNISTDataError(f"{labels_path} holds label {labels.max()}, outside 0–9.")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (N, H, W) → float images (N, 1, H, W) in [-1, 1], the range the diffusion model works in."""
    return images.float().div(127.5).sub(1.0).unsqueeze(1)


class MNISTDataset(torch.utils.data.Dataset):
    """MNIST as `(image, label)` pairs, images as float tensors `(1, 28, 28)` in [-1, 1], held in memory."""

    def __init__(self, data_dir: str | os.PathLike, split: str = "train", download: bool = True):
        images, self.labels = load_mnist(data_dir, split, download=download)
        self.images = to_model_range(images)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]
