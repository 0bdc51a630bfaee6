"""Tests of the MNIST IDX loader: the real files, tiny generated IDX files, and downloads from a local HTTP server."""

import dataclasses
import functools
import gzip
import hashlib
import http.server
import json
import os
import shutil
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mnist_diffusion import data
from mnist_diffusion.data import (
    CHECKSUMS_FILE,
    MNIST_FILES,
    MNISTDataError,
    MNISTDataset,
    ensure_mnist,
    load_mnist,
    read_idx,
    read_idx_bytes,
)
from mnist_diffusion.lab.synthetic_mnist import idx_bytes

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
ALL_SPECS = [spec for specs in MNIST_FILES.values() for spec in specs]
HAVE_REAL = all((SHARED / spec.name).is_file() for spec in ALL_SPECS)
needs_real = pytest.mark.skipif(not HAVE_REAL, reason=f"the real MNIST files are not in {SHARED}")

TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
FAKE_COUNT = 32  # images per split in the stand-in files used when the real ones are absent


def content_md5(path: Path) -> str:
    """The md5 the loader verifies: of the IDX bytes, decompressed."""
    return hashlib.md5(gzip.decompress(path.read_bytes())).hexdigest()


def write_gz(path: Path, payload: bytes) -> Path:
    path.write_bytes(gzip.compress(payload, mtime=0))
    return path


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    return write_gz(path, idx_bytes(array, magic))


def write_tiny_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> tuple[Path, Path]:
    images_spec, labels_spec = MNIST_FILES[split]
    return write_idx(folder / images_spec.name, images), write_idx(folder / labels_spec.name, labels)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Nothing here may reach past 127.0.0.1: no proxy, no $MNIST_MIRROR from outside, and a dead default mirror."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "MNIST_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setattr(data, "DEFAULT_MIRROR", "http://127.0.0.1:9/unused-default-mirror/")


# ---------------------------------------------------------------------------------------------------------------------
# 1. The real files
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_train():
    return load_mnist(SHARED, "train", download=False)


@needs_real
def test_real_train_split(real_train):
    images, labels = real_train
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60000,) and labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=10).tolist() == TRAIN_CLASS_COUNTS
    assert labels[0].item() == 5
    assert images.min().item() == 0 and images.max().item() == 255


@needs_real
def test_real_test_split():
    images, labels = load_mnist(SHARED, "test", download=False)
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10000,) and labels.dtype == torch.int64
    assert labels.min().item() == 0 and labels.max().item() == 9


@needs_real
def test_real_dataset_is_float_in_minus_one_one():
    dataset = MNISTDataset(SHARED, "test", download=False)
    assert len(dataset) == 10000
    image, label = dataset[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert label.dtype == torch.int64 and 0 <= label.item() <= 9
    assert dataset.images.shape == (10000, 1, 28, 28)
    assert dataset.images.min().item() == -1.0 and dataset.images.max().item() == 1.0


# ---------------------------------------------------------------------------------------------------------------------
# 2. Tiny generated IDX files
# ---------------------------------------------------------------------------------------------------------------------


def test_read_idx_images_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    images_out = read_idx(write_idx(tmp_path / "images.gz", images))
    labels_out = read_idx(str(write_idx(tmp_path / "labels.gz", labels)))  # a str path works too
    assert images_out.shape == (3, 4, 5) and images_out.dtype == np.uint8
    np.testing.assert_array_equal(images_out, images)
    assert labels_out.shape == (3,) and labels_out.dtype == np.uint8
    np.testing.assert_array_equal(labels_out, labels)


def test_read_idx_header_is_big_endian(tmp_path):
    path = write_gz(tmp_path / "images.gz", bytes.fromhex("00000803 00000002 00000001 00000003") + bytes(range(6)))
    out = read_idx(path)
    assert out.shape == (2, 1, 3)
    assert out.ravel().tolist() == [0, 1, 2, 3, 4, 5]


def test_read_idx_empty_images(tmp_path):
    assert read_idx(write_idx(tmp_path / "images.gz", np.zeros((0, 28, 28), np.uint8))).shape == (0, 28, 28)


@pytest.mark.parametrize("extra", [-1, -7, 5], ids=["one-short", "seven-short", "too-long"])
def test_read_idx_size_mismatch_names_the_path(tmp_path, extra):
    payload = idx_bytes(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))
    payload = payload[:extra] if extra < 0 else payload + bytes(extra)
    path = write_gz(tmp_path / "mismatch.gz", payload)
    with pytest.raises(MNISTDataError, match="announces") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert "(2, 3, 4)" in str(info.value)


def test_read_idx_not_gzip_names_the_path(tmp_path):
    path = tmp_path / "plain.gz"
    path.write_bytes(idx_bytes(np.zeros(4, np.uint8)))  # valid IDX, but not compressed
    with pytest.raises(MNISTDataError, match="not a readable gzip file") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncated_gzip_stream_names_the_path(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8)), mtime=0)
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(MNISTDataError, match="not a readable gzip file") as info:
        read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "magic", [0x00000802, 0x00000804, 0x00000903, 0x00000D03, 0x01000803, 0x03080000],
    ids=["ndim2", "ndim4", "int8", "float", "high-byte", "little-endian"],
)
def test_read_idx_wrong_magic_names_the_path(tmp_path, magic):
    path = write_idx(tmp_path / "magic.gz", np.zeros((2, 3, 4), np.uint8), magic=magic)
    with pytest.raises(MNISTDataError, match="IDX header") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_too_short_for_any_header(tmp_path):
    path = write_gz(tmp_path / "short.gz", b"\x00\x00\x08")
    with pytest.raises(MNISTDataError) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_header_cut_inside_the_sizes(tmp_path):
    path = write_gz(tmp_path / "short-header.gz", bytes.fromhex("00000803 00000001"))  # ndim 3, one size of three
    with pytest.raises(MNISTDataError) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_corrupt_deflate_data(tmp_path):
    compressed = bytearray(gzip.compress(idx_bytes(np.tile(np.arange(256, dtype=np.uint8), 40)), mtime=0))
    compressed[10] ^= 0xFF  # first byte of the deflate stream (no file name in the gzip header)
    path = tmp_path / "corrupt-deflate.gz"
    path.write_bytes(bytes(compressed))
    with pytest.raises(MNISTDataError) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_load_mnist_tiny_files_without_md5(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    labels = np.array([0, 9, 3, 7], dtype=np.uint8)
    images_path, labels_path = write_tiny_split(tmp_path, "test", images, labels)

    assert ensure_mnist(tmp_path, "test", download=False, verify_md5=False) == (images_path, labels_path)
    images_out, labels_out = load_mnist(tmp_path, "test", download=False, verify_md5=False)
    assert images_out.dtype == torch.uint8 and images_out.shape == (4, 28, 28)
    assert labels_out.dtype == torch.int64 and labels_out.tolist() == [0, 9, 3, 7]
    np.testing.assert_array_equal(images_out.numpy(), images)
    images_out[0, 0, 0] = 1  # a writable copy, not a view of the read-only file buffer
    assert sorted(os.listdir(tmp_path)) == sorted(spec.name for spec in MNIST_FILES["test"])


def test_load_mnist_rejects_images_and_labels_that_do_not_pair_up(tmp_path):
    write_tiny_split(tmp_path, "train", np.zeros((3, 28, 28), np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(MNISTDataError, match="do not pair up"):
        load_mnist(tmp_path, "train", download=False, verify_md5=False)


def test_load_mnist_rejects_swapped_files(tmp_path):
    write_tiny_split(tmp_path, "train", np.zeros(3, np.uint8), np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(MNISTDataError, match="do not pair up"):
        load_mnist(tmp_path, "train", download=False, verify_md5=False)


def test_load_mnist_rejects_labels_above_nine(tmp_path):
    _, labels_path = write_tiny_split(tmp_path, "train", np.zeros((2, 28, 28), np.uint8), np.array([3, 10], np.uint8))
    with pytest.raises(MNISTDataError, match="label 10") as info:
        load_mnist(tmp_path, "train", download=False, verify_md5=False)
    assert str(labels_path) in str(info.value)


@pytest.mark.parametrize("split", ["train", "test"])
def test_tiny_file_with_a_canonical_name_fails_the_md5_check(tmp_path, split):
    images_path, _ = write_tiny_split(tmp_path, split, np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.uint8))
    images_spec = MNIST_FILES[split][0]
    for call in (functools.partial(ensure_mnist, tmp_path, split, download=False),
                 functools.partial(load_mnist, tmp_path, split, download=False, verify_md5=True)):
        with pytest.raises(MNISTDataError, match="corrupt") as info:
            call()
        message = str(info.value)
        assert images_spec.md5 in message
        assert str(images_path.resolve()) in message
        assert content_md5(images_path) in message  # the actual md5 is reported too


def test_existing_corrupt_file_is_reported_not_redownloaded(tmp_path):
    # download=True only fetches missing files; a present-but-wrong file is an error (and no network is touched:
    # the default mirror is a dead local port here).
    write_tiny_split(tmp_path, "test", np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(MNISTDataError, match="corrupt"):
        ensure_mnist(tmp_path, "test", download=True)


# ---------------------------------------------------------------------------------------------------------------------
# 3. Missing files
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_file_without_download_names_file_and_folder(tmp_path, split):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(MNISTDataError, match="missing") as info:
        load_mnist(folder, split, download=False)
    message = str(info.value)
    assert MNIST_FILES[split][0].name in message
    assert str(folder.resolve()) in message
    assert os.listdir(folder) == []


def test_missing_labels_file_is_named(tmp_path):
    images = np.zeros((2, 28, 28), np.uint8)
    write_idx(tmp_path / MNIST_FILES["train"][0].name, images)
    with pytest.raises(MNISTDataError, match="missing") as info:
        ensure_mnist(tmp_path, "train", download=False, verify_md5=False)
    assert MNIST_FILES["train"][1].name in str(info.value)
    assert str(tmp_path.resolve()) in str(info.value)


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split"):
        ensure_mnist(tmp_path, "validation", download=False)


# ---------------------------------------------------------------------------------------------------------------------
# 4. Downloads from a local HTTP server
# ---------------------------------------------------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; counts GETs; files in `server.cut_short` announce their full length but stop early."""

    def do_GET(self):
        self.server.requests.append(self.path)
        cut = self.server.cut_short.get(self.path.lstrip("/"))
        if cut is None:
            return super().do_GET()
        full, sent = cut
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(full)))
        self.end_headers()
        self.wfile.write(full[:sent])
        self.wfile.flush()
        self.close_connection = True  # then the server closes the socket, short of the announced length

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    httpd.requests, httpd.cut_short = [], {}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(root=root, url=f"http://127.0.0.1:{httpd.server_address[1]}/",
                              requests=httpd.requests, cut_short=httpd.cut_short)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def source_bytes():
    """The bytes of the four files: the real ones when available, else small generated stand-ins."""
    if HAVE_REAL:
        return {spec.name: (SHARED / spec.name).read_bytes() for spec in ALL_SPECS}
    rng = np.random.default_rng(0)
    out = {}
    for images_spec, labels_spec in MNIST_FILES.values():
        out[images_spec.name] = gzip.compress(
            idx_bytes(rng.integers(0, 256, size=(FAKE_COUNT, 28, 28), dtype=np.uint8)), mtime=0)
        out[labels_spec.name] = gzip.compress(
            idx_bytes(rng.integers(0, 10, size=FAKE_COUNT, dtype=np.uint8)), mtime=0)
    return out


@pytest.fixture
def canonical(source_bytes, monkeypatch):
    """The four files' bytes; with stand-ins, MNIST_FILES is patched so that their md5s are the expected ones."""
    if not HAVE_REAL:
        for split, specs in list(data.MNIST_FILES.items()):
            monkeypatch.setitem(data.MNIST_FILES, split, tuple(
                dataclasses.replace(spec, md5=hashlib.md5(gzip.decompress(source_bytes[spec.name])).hexdigest(),
                                    count=FAKE_COUNT)
                for spec in specs))
    return source_bytes


def serve(server, canonical, names=None):
    for name in canonical if names is None else names:
        (server.root / name).write_bytes(canonical[name])


def specs(split):
    return data.MNIST_FILES[split]  # looked up at call time: may be patched by `canonical`


def test_download_verifies_and_is_not_repeated(tmp_path, server, canonical):
    serve(server, canonical)
    dest = tmp_path / "dest" / "nested"  # created on demand
    paths = ensure_mnist(dest, "train", download=True, mirror=server.url)

    assert paths == tuple(dest / spec.name for spec in specs("train"))
    assert sorted(server.requests) == sorted("/" + spec.name for spec in specs("train"))
    for path, spec in zip(paths, specs("train")):
        assert path.read_bytes() == canonical[spec.name]
        assert hashlib.md5(read_idx_bytes(path)).hexdigest() == spec.md5
    assert sorted(os.listdir(dest)) == sorted(spec.name for spec in specs("train"))  # no .part left over

    assert ensure_mnist(dest, "train", download=True, mirror=server.url) == paths
    assert len(server.requests) == 2  # the second call found both files and downloaded nothing


def test_download_fetches_only_the_missing_file(tmp_path, server, canonical):
    serve(server, canonical)
    images_spec, labels_spec = specs("test")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / images_spec.name).write_bytes(canonical[images_spec.name])
    ensure_mnist(dest, "test", download=True, mirror=server.url.rstrip("/"))  # with or without the trailing slash
    assert server.requests == ["/" + labels_spec.name]
    assert (dest / labels_spec.name).read_bytes() == canonical[labels_spec.name]


def test_downloaded_split_loads(tmp_path, server, canonical):
    serve(server, canonical)
    data_dir = tmp_path / "dest"
    ensure_mnist(data_dir, "test", download=True, mirror=server.url)
    images, labels = load_mnist(data_dir, "test", download=False)
    count = specs("test")[0].count
    assert images.shape == (count, 28, 28) and labels.shape == (count,)
    assert 0 <= labels.min().item() and labels.max().item() <= 9


def test_mnist_mirror_environment_variable_is_used(tmp_path, server, canonical, monkeypatch):
    serve(server, canonical)
    monkeypatch.setenv("MNIST_MIRROR", server.url)
    dest = tmp_path / "dest"
    ensure_mnist(dest, "test", download=True)  # mirror=None
    assert sorted(server.requests) == sorted("/" + spec.name for spec in specs("test"))
    assert sorted(os.listdir(dest)) == sorted(spec.name for spec in specs("test"))


def test_explicit_mirror_wins_over_the_environment(tmp_path, server, canonical, monkeypatch):
    serve(server, canonical)
    monkeypatch.setenv("MNIST_MIRROR", server.url + "not-here/")
    ensure_mnist(tmp_path / "dest", "test", download=True, mirror=server.url)
    assert all(not path.startswith("/not-here/") for path in server.requests) and len(server.requests) == 2


def broken_download_cases():
    # (which of the split's files is broken, how): the broken one is the images file (first) or the labels file.
    return [(index, how) for index in (0, 1) for how in ("half-file", "cut-connection", "altered-bytes")]


@pytest.mark.parametrize("index, how", broken_download_cases())
def test_broken_download_raises_and_leaves_nothing(tmp_path, server, canonical, index, how):
    broken = specs("train")[index]
    good = specs("train")[1 - index]
    serve(server, canonical, [good.name])
    content = canonical[broken.name]
    if how == "half-file":  # the server has only the first half, and says so
        (server.root / broken.name).write_bytes(content[: len(content) // 2])
    elif how == "cut-connection":  # the server announces the full Content-Length and closes half way
        server.cut_short[broken.name] = (content, len(content) // 2)
    else:  # same length, a few bytes changed
        altered = bytearray(content)
        for i in range(len(altered) // 3, len(altered) // 3 + 8):
            altered[i] ^= 0x5A
        (server.root / broken.name).write_bytes(bytes(altered))

    dest = tmp_path / "dest"
    with pytest.raises(MNISTDataError) as info:
        ensure_mnist(dest, "train", download=True, mirror=server.url)
    message = str(info.value)
    assert broken.name in message and str(dest.resolve()) in message
    if how == "cut-connection":  # urllib returns the short body silently (Python 3.11); the md5 then catches it
        assert "md5" in message or "IncompleteRead" in message
    else:
        assert "md5" in message and broken.md5 in message
    assert "/" + broken.name in server.requests

    # Nothing of the broken file is left: neither a partial file nor a .part temporary, nor the folder made for it.
    if index == 1:
        assert os.listdir(dest) == [good.name] and (dest / good.name).read_bytes() == canonical[good.name]
    else:
        assert not dest.exists()


def test_file_not_on_the_server_raises(tmp_path, server, canonical):
    serve(server, canonical, [specs("train")[1].name])  # the labels, but not the images
    dest = tmp_path / "dest"
    with pytest.raises(MNISTDataError) as info:
        ensure_mnist(dest, "train", download=True, mirror=server.url)
    message = str(info.value)
    assert specs("train")[0].name in message and "404" in message
    assert server.requests == ["/" + specs("train")[0].name]
    assert not dest.exists()


def test_server_down_raises(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(MNISTDataError, match="Could not download"):
            ensure_mnist(tmp_path / "dest", "test", download=True, mirror=f"http://127.0.0.1:{port}/")
    assert not (tmp_path / "dest").exists()


def test_download_file_directly_leaves_no_part_file(tmp_path, server, canonical):
    spec = specs("test")[1]
    serve(server, canonical, [spec.name])
    dest = tmp_path / "dest"
    with pytest.raises(MNISTDataError, match="expected 0{32}"):
        data.download_file(server.url + spec.name, dest / spec.name, "0" * 32)
    assert not dest.exists()
    data.download_file(server.url + spec.name, dest / spec.name, spec.md5)
    assert os.listdir(dest) == [spec.name]


def test_a_failed_download_removes_the_folders_it_made_and_only_those(tmp_path, server, canonical):
    spec = specs("test")[1]
    serve(server, canonical, [spec.name])
    there = tmp_path / "there"
    (there / "before").mkdir(parents=True)
    for url in (server.url + spec.name, "http://127.0.0.1:9/" + spec.name):  # a wrong md5; nothing listening
        with pytest.raises(MNISTDataError):
            data.download_file(url, there / "made" / "for it" / spec.name, "0" * 32)
        assert os.listdir(there) == ["before"] and os.listdir(there / "before") == []


def test_malformed_mirror_raises_mnist_data_error(tmp_path):
    with pytest.raises(MNISTDataError):
        ensure_mnist(tmp_path / "dest", "test", download=True, mirror="/not/a/url/")


# ---------------------------------------------------------------------------------------------------------------------
# 5. Other copies of the files, and data sets of their own
# ---------------------------------------------------------------------------------------------------------------------


def test_plain_and_recompressed_copies_of_the_canonical_files_load(tmp_path, canonical):
    # The md5 is over the IDX content, so the same digits pass however they are stored.
    images_spec, labels_spec = specs("test")
    original = tmp_path / "original"
    original.mkdir()
    for spec in (images_spec, labels_spec):
        (original / spec.name).write_bytes(canonical[spec.name])
    expected_images, expected_labels = load_mnist(original, "test", download=False)

    plain, recompressed = tmp_path / "plain", tmp_path / "recompressed"
    plain.mkdir()
    recompressed.mkdir()
    for spec in (images_spec, labels_spec):
        content = gzip.decompress(canonical[spec.name])
        (plain / spec.plain_name).write_bytes(content)
        (recompressed / spec.name).write_bytes(gzip.compress(content, compresslevel=1, mtime=1))
        assert (recompressed / spec.name).read_bytes() != canonical[spec.name]
    assert ensure_mnist(plain, "test", download=False) == (plain / images_spec.plain_name,
                                                            plain / labels_spec.plain_name)
    for folder in (plain, recompressed):
        images, labels = load_mnist(folder, "test", download=False)
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_a_plain_copy_with_other_digits_is_corrupt(tmp_path, canonical):
    images_spec, labels_spec = specs("test")
    content = bytearray(gzip.decompress(canonical[images_spec.name]))
    content[-1] ^= 0xFF  # one pixel of the last digit
    (tmp_path / images_spec.plain_name).write_bytes(bytes(content))
    (tmp_path / labels_spec.name).write_bytes(canonical[labels_spec.name])
    with pytest.raises(MNISTDataError, match="corrupt") as info:
        load_mnist(tmp_path, "test", download=False)
    assert str((tmp_path / images_spec.plain_name).resolve()) in str(info.value) and images_spec.md5 in str(info.value)


def test_a_data_dir_that_is_a_file_is_named(tmp_path):
    not_a_folder = tmp_path / "mnist.tar"
    not_a_folder.write_bytes(b"not a folder")
    for download in (False, True):
        with pytest.raises(MNISTDataError, match="is a file; pass the folder") as info:
            load_mnist(not_a_folder, "train", download=download)
        assert str(not_a_folder.resolve()) in str(info.value)


def test_a_declared_data_set_loads_with_its_own_checksums(synthetic_mnist):
    # What the real-file tests check of the loader, on a machine without the real files: the generated set of
    # mnist_diffusion/lab/synthetic_mnist.py, in the same format, passes with the checksums it declares.
    images, labels = load_mnist(synthetic_mnist, "train", download=False)
    assert images.shape == (320, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (320,) and labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=10).tolist() == [32] * 10
    assert images.min().item() == 0 and images.max().item() == 255
    assert load_mnist(synthetic_mnist, "test", download=False)[0].shape == (100, 28, 28)
    dataset = MNISTDataset(synthetic_mnist, "test", download=False)
    image, label = dataset[0]
    assert len(dataset) == 100 and image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert label.dtype == torch.int64 and 0 <= label.item() <= 9
    assert dataset.images.min().item() == -1.0 and dataset.images.max().item() == 1.0


def test_a_declared_data_set_is_still_verified(tmp_path, synthetic_mnist):
    folder = tmp_path / "copy"
    shutil.copytree(synthetic_mnist, folder)
    images_spec = MNIST_FILES["test"][0]
    declared = folder / CHECKSUMS_FILE
    write_idx(folder / images_spec.name, np.zeros((100, 28, 28), np.uint8))  # well-formed, but other images
    with pytest.raises(MNISTDataError, match="corrupt") as info:
        load_mnist(folder, "test", download=False)
    assert f"declared in {declared.resolve()}" in str(info.value)

    checksums = json.loads(declared.read_text())
    del checksums[images_spec.plain_name]
    declared.write_text(json.dumps(checksums))
    with pytest.raises(MNISTDataError, match=f"declares no md5 for {images_spec.plain_name}"):
        load_mnist(folder, "test", download=False)
    declared.write_text('{"t10k-images-idx3-ubyte": 12}')
    with pytest.raises(MNISTDataError, match="must map each IDX file to the md5"):
        load_mnist(folder, "test", download=False)
    declared.write_text("{")
    with pytest.raises(MNISTDataError, match="not readable JSON"):
        load_mnist(folder, "test", download=False)


def test_without_its_checksums_a_data_set_of_its_own_is_refused(tmp_path, synthetic_mnist):
    # The declaration is the only way in: the same files without checksums.json are held to the canonical md5s.
    folder = tmp_path / "copy"
    shutil.copytree(synthetic_mnist, folder)
    (folder / CHECKSUMS_FILE).unlink()
    with pytest.raises(MNISTDataError, match=r"corrupt: .* \(the canonical file\)") as info:
        load_mnist(folder, "train", download=False)
    assert MNIST_FILES["train"][0].md5 in str(info.value)
