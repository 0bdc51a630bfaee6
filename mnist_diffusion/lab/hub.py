"""Push a trained pipeline to the Hugging Face Hub, as a repo that loads with this package and without it.

    MNISTDDPMPipeline.from_pretrained("org/mnist-ddpm")                           # with mnist_diffusion installed
    DiffusionPipeline.from_pretrained("org/mnist-ddpm", trust_remote_code=True)  # without it

For a component whose library is neither diffusers nor transformers, diffusers looks in the repo for its code,
`<component>/<library>.py`, and fails if it is not there. So the repo carries this package's component modules,
copied verbatim (one source of truth): `pipeline_mnist_ddpm.py` and the checks it imports at the root,
`unet/unet_mnist.py` and `scheduler/scheduling_mnist_ddpm.py` beside their configs, and its model_index.json names each component by that
file: `"unet": ["unet_mnist", "ClassConditionedUNet"]`.
"""

import argparse
import inspect
import json
import os
import re
from pathlib import Path, PurePosixPath

from diffusers.utils import logging
from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi, get_token
from huggingface_hub.errors import LocalTokenNotFoundError

from ..loading import component_class
from ..pipeline_mnist_ddpm import MNISTDDPMPipeline
from .card import pipeline_code_files, render_model_card
from .redaction import find_secrets
from .run_folder import BY_PRODUCTS, TRAINING_CONFIG

logger = logging.get_logger(__name__)

# As git decides: a file with a NUL byte in its first 8,000 bytes is binary (weights, images); any other is text.
BINARY_SNIFF_BYTES = 8000
CARD_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)|<img\s[^>]*?src\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)


def source_file(cls: type) -> Path:
    """The module file that defines `cls`, e.g. `.../mnist_diffusion/unet_mnist.py` for `ClassConditionedUNet`."""
    return Path(inspect.getsourcefile(cls))


def component_names(model_index: dict) -> list[str]:
    """The components a model_index.json lists, which are also the repo's folders for them: `["scheduler", "unet"]`."""
    return [name for name, entry in model_index.items()
            if not name.startswith("_") and isinstance(entry, list) and entry[:1] != [None]]  # [null, null]: none


def hub_model_index(model_index: dict) -> tuple[dict, dict[str, Path]]:
    """
    Rewrite a pipeline's model_index.json for a Hub repo, and list the source files the repo needs beside it.

    `save_pretrained` names this package's classes by module path, `["mnist_diffusion.unet_mnist",
    "ClassConditionedUNet"]`; the Hub copy names them by file, `["unet_mnist", "ClassConditionedUNet"]`, and the
    pipeline by `[file, class]`, the form diffusers reads as "pipeline code at the repo root". diffusers' own classes
    (a swapped-in scheduler, say) stay as they are. A model_index.json already in the Hub form is returned unchanged.

    Args:
        model_index (`dict`): the content of an `MNISTDDPMPipeline`'s model_index.json.

    Returns:
        `tuple[dict, dict[str, Path]]`: the rewritten model index, and the source file to upload at each path of the
        repo, e.g. `{"pipeline_mnist_ddpm.py": ..., "unet/unet_mnist.py": ...}`.
    """
    pipeline_entry = model_index.get("_class_name")
    pipeline_name = pipeline_entry[1] if isinstance(pipeline_entry, list) else pipeline_entry
    if pipeline_name != MNISTDDPMPipeline.__name__:
        raise ValueError(
            f"model_index.json describes a {pipeline_name!r} (its `_class_name` is {pipeline_entry!r}), not an "
            f"{MNISTDDPMPipeline.__name__}."
        )
    pipeline_source, *pipeline_imports = pipeline_code_files()
    index = {**model_index, "_class_name": [pipeline_source.stem, pipeline_name]}
    # The pipeline file and the modules it imports relatively, at the root, where diffusers fetches them from.
    sources = {path.name: path for path in (pipeline_source, *pipeline_imports)}

    for name in component_names(model_index):
        library, class_name = model_index[name]
        cls = component_class(name, model_index[name])  # the loader's check: the code is in diffusers or here
        if library != "diffusers":
            index[name] = [source_file(cls).stem, cls.__name__]
            sources[f"{name}/{source_file(cls).name}"] = source_file(cls)
    return index, sources


def card_images(card_text: str, model_dir: Path) -> list[str]:
    """
    The images that `card_text` shows by relative path (Markdown `![...](path)` or HTML `<img src="path">`) and
    that exist in `model_dir`. A missing one is reported as a warning; one in `BY_PRODUCTS` is an error.

    Args:
        card_text (`str`): the model card.
        model_dir (`Path`): the pipeline folder the paths are relative to.

    Returns:
        `list[str]`: repo paths of the images to upload with the card.
    """
    images = []
    for match in CARD_IMAGE.finditer(card_text):
        reference = match.group(1) or match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", reference, re.IGNORECASE) or reference.startswith(("/", "#")):
            continue  # a URL or an absolute path, not a file of the repo
        path = PurePosixPath(reference.split("#")[0].split("?")[0])
        if path.parts and path.parts[0] in BY_PRODUCTS:
            raise ValueError(
                f"The model card shows {reference}, but {path.parts[0]}/ is never pushed; copy the image into the "
                f"pipeline folder (e.g. images/) and show it from there."
            )
        if ".." in path.parts or not (model_dir / path).is_file():
            logger.warning(f"The model card shows {reference}, which is not a file in {model_dir}; it is not pushed.")
        elif str(path) not in images:
            images.append(str(path))
    return images


def require_token(token: str | None) -> str:
    """
    Args:
        token (`str`, *optional*): a Hub token; defaults to `HF_TOKEN` or the one `hf auth login` saved.

    Returns:
        `str`: the token.

    Raises:
        `huggingface_hub.errors.LocalTokenNotFoundError`: there is no token.
    """
    token = token or get_token()
    if not token:
        raise LocalTokenNotFoundError(
            "Pushing to the Hub needs a token with write access: pass one (`--token`, `--hub_token` or `token=`), "
            "set HF_TOKEN, or log in with `hf auth login`."
        )
    return token


def pipeline_files(model_dir: Path, card_text: str) -> dict[str, Path | bytes]:
    """
    The files of the Hub repo for the pipeline in `model_dir`: model_index.json (rewritten by [`hub_model_index`]),
    the component folders it names (unet/, scheduler/), training_config.json and evaluation/*.json if present, the
    component sources, the model card as README.md and the images the card shows from `model_dir`. Nothing else of
    `model_dir`: not checkpoints/, logs/ or samples/, nor optimizer state.

    Args:
        model_dir (`Path`): a folder written by `MNISTDDPMPipeline.save_pretrained` or by `scripts/train.py`.
        card_text (`str`): the model card.

    Returns:
        `dict[str, Path | bytes]`: each file's content (or the local file that holds it) by its path in the repo.
    """
    if not (model_dir / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{model_dir} has no model_index.json; pass a folder written by `save_pretrained` or scripts/train.py."
        )
    model_index, sources = hub_model_index(json.loads((model_dir / "model_index.json").read_text()))
    files = {"model_index.json": (json.dumps(model_index, indent=2, sort_keys=True) + "\n").encode()}
    for name in component_names(model_index):
        if not (model_dir / name).is_dir():
            raise FileNotFoundError(
                f"model_index.json lists the component {name!r}, but {model_dir / name} is missing."
            )
        for path in sorted((model_dir / name).rglob("*")):
            relative = path.relative_to(model_dir)
            # Python files come from the package, never from the folder: the package's modules are the one source.
            if path.is_file() and path.suffix != ".py" and not any(part.startswith(".") for part in relative.parts):
                files[relative.as_posix()] = path
    if (model_dir / TRAINING_CONFIG).is_file():
        files[TRAINING_CONFIG] = model_dir / TRAINING_CONFIG
    for path in sorted((model_dir / "evaluation").glob("*.json")):  # the results the card's numbers come from
        files[f"evaluation/{path.name}"] = path
    files.update(sources)
    files["README.md"] = card_text.encode()
    files.update({image: model_dir / image for image in card_images(card_text, model_dir)})
    return files


def text_of(content: Path | bytes) -> str | None:
    """The text of a file to push (a local file or its bytes), or None for a binary one."""
    if isinstance(content, Path):
        with content.open("rb") as file:
            head = file.read(BINARY_SNIFF_BYTES)
            content = head if b"\0" in head else head + file.read()
    return None if b"\0" in content[:BINARY_SNIFF_BYTES] else content.decode("utf-8", errors="replace")


def check_no_secrets(files: dict[str, Path | bytes]) -> None:
    """
    Refuse to push text that holds something shaped like a Hub token: a `training_config.json` whose command was
    recorded with `--hub_token` by an older train.py, a pasted token in the card, a config or an evaluation file.

    Args:
        files (`dict[str, Path | bytes]`): the files of [`pipeline_files`].

    Raises:
        `ValueError`: naming each such file and the start of each token found, never the token itself.
    """
    leaks = []
    for path, content in files.items():
        text = text_of(content)
        if text is not None and (secrets := find_secrets(text)):
            if path == "README.md":
                where = "the model card (README.md)"
            else:
                where = str(content) if isinstance(content, Path) else path
            leaks.append(f"{where}: {', '.join(secrets)}")
    if leaks:
        raise ValueError(
            "Not pushing: these files would publish something shaped like a Hub token:\n  " + "\n  ".join(leaks)
            + "\nRemove it from each file (replace it with <redacted>), revoke the token if it was ever shared, and "
            "push again. Nothing was uploaded."
        )


def push_pipeline_to_hub(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    token: str | None = None,
    card_text: str | None = None,
    source_url: str | None = None,
) -> CommitInfo:
    """
    Upload the pipeline in `model_dir` to the Hub repo `repo_id` as one commit of [`pipeline_files`], creating the
    repo if it is missing. Files of an earlier push left in the component folders (an old variant or shard) are
    deleted, so that those folders hold this pipeline only; other files of the repo stay. A folder with a text file
    that holds something shaped like a token is refused before anything is sent (see [`check_no_secrets`]).

    Args:
        model_dir (`str` or `os.PathLike`): a folder written by `MNISTDDPMPipeline.save_pretrained` or by
            `scripts/train.py`.
        repo_id (`str`): the repo, e.g. `"org/mnist-ddpm"`.
        private (`bool`, *optional*): create the repo private; an existing repo keeps its visibility.
        revision (`str`, *optional*): the branch to commit to, created from `main` if missing; defaults to `main`.
        token (`str`, *optional*): a token with write access; defaults to `HF_TOKEN` or the saved login.
        card_text (`str`, *optional*): the model card; defaults to the card of this pipeline rendered from its own
            folder by [`~mnist_diffusion.lab.card.render_model_card`].
        source_url (`str`, *optional*): the package's Git repository, which the rendered card installs from; defaults
            to setup.py's `url`. Ignored when `card_text` is given.

    Returns:
        [`~huggingface_hub.CommitInfo`]: the commit, with its `oid` (commit hash) and `commit_url`.
    """
    model_dir = Path(model_dir)
    token = require_token(token)  # first: a push that cannot happen loads nothing
    if card_text is None:
        card_text = render_model_card(model_dir, repo_id, source_url)
    files = pipeline_files(model_dir, card_text)
    check_no_secrets(files)
    components = component_names(json.loads(files["model_index.json"]))
    api = HfApi(token=token)

    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    stale = [
        path
        for path in api.list_repo_files(repo_id, revision=revision)
        if path.split("/")[0] in components and path not in files
    ]
    operations = [CommitOperationDelete(path) for path in stale]
    operations += [CommitOperationAdd(path, content) for path, content in files.items()]
    return api.create_commit(repo_id, operations, commit_message=f"Upload {model_dir.name}", revision=revision)


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--push_to_hub`, `--hub_model_id` and `--hub_token` options of `scripts/train.py`."""
    hub = parser.add_argument_group("Hugging Face Hub")
    hub.add_argument("--push_to_hub", action="store_true", help="Push the trained pipeline to the Hub at the end.")
    hub.add_argument("--hub_model_id", default=None, help="The repo to push to, e.g. org/mnist-ddpm.")
    hub.add_argument("--hub_token", default=None, help="Token with write access (default: HF_TOKEN or saved login).")


def check_hub_arguments(args: argparse.Namespace) -> list[str]:
    """The problems with the Hub options of `scripts/train.py`, found before training rather than after it."""
    if not args.push_to_hub:
        return []
    if not args.hub_model_id:
        return ["--push_to_hub needs --hub_model_id, e.g. --hub_model_id org/mnist-ddpm"]
    try:
        require_token(args.hub_token)
    except LocalTokenNotFoundError as error:
        return [str(error)]
    return []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="push_to_hub.py",
        description="Push a trained MNISTDDPMPipeline folder to the Hugging Face Hub.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model_dir", required=True, help="The pipeline folder (e.g. the --output_dir of train.py).")
    parser.add_argument("--repo_id", required=True, help="The repo to push to, e.g. org/mnist-ddpm.")
    parser.add_argument("--private", action="store_true", help="Create the repo private.")
    parser.add_argument("--revision", default=None, help="Branch to commit to (created if missing; default: main).")
    parser.add_argument("--token", default=None, help="Token with write access (default: HF_TOKEN or the saved login).")
    parser.add_argument("--source_url", default=None,
                        help="The package's Git repository, which the card installs from (default: setup.py's url).")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        commit = push_pipeline_to_hub(
            args.model_dir, args.repo_id, private=args.private, revision=args.revision, token=args.token,
            source_url=args.source_url,
        )
    # What the user can fix (no token, not a pipeline folder, a token in a file): the message, not a traceback.
    except (LocalTokenNotFoundError, FileNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(f"Pushed {args.model_dir} to {commit.commit_url}")
