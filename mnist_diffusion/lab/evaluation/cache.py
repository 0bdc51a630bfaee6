"""
Results kept on disk under a hash of everything that made them, written atomically: a killed evaluation resumes,
and a result is never reused for anything but exactly what produced it.
"""

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch


def cache_path(cache_dir: str | Path | None, kind: str, **key) -> Path | None:
    """
    Where the result of `kind` computed from `key` is kept in `cache_dir` (None without one), for [`kept`]: the file
    is named by a hash of `key`, tensors (digits, a proposal) hashed by their bytes and anything else as JSON, so any
    other input is another file.
    """
    if cache_dir is None:
        return None
    digest = hashlib.sha256(kind.encode())
    for name, value in sorted(key.items()):
        digest.update(name.encode())
        if torch.is_tensor(value):
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(json.dumps(value, sort_keys=True).encode())
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return Path(cache_dir) / f"{kind}-{digest.hexdigest()[:24]}.pt"


def kept(path: Path | None, compute: Callable[[], dict]) -> dict:
    """`compute()`, kept in `path` (written atomically, so a kill leaves no half file) and read from there if it is."""
    if path is not None and path.is_file():
        return torch.load(path)
    result = compute()
    if path is not None:
        torch.save(result, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
    return result


def run_cache_dir(cache_root: Path, key: dict) -> Path:
    """
    The cache folder of one configuration: named by a hash of `key`, everything that determines its images (the
    model's identity from [`fingerprint.model_sha256`], the running sampler's config, the sampler settings, dtype,
    seed and batch layout), so that another model, however it is named, or any other setting never reuses another
    run's images. `key` is also written to the folder's settings.json for a reader.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    folder = cache_root / digest.hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
    return folder
