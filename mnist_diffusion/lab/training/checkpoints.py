"""Checkpoints that survive a kill: written under a temporary name and renamed when complete, checked file by file
before a resume, resumed only by a run that trains the same thing (its identity, compared with the options before
anything is loaded), rolled back when an older one is chosen. And the output folder a run may use."""

import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils.constants import OPTIMIZER_NAME, SAFE_WEIGHTS_NAME, SCHEDULER_NAME
from safetensors import SafetensorError, safe_open

from ..run_folder import CHECKPOINTS, RUN_ENTRIES

logger = get_logger(__name__)


CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINING_STATE = "training_state.json"


# What `accelerator.save_state` writes besides the random states: the model, optimiser and lr schedule; each object
# registered for checkpointing (an EMA, say) goes to `custom_checkpoint_<i>.pkl`.
CHECKPOINT_FILES = (SAFE_WEIGHTS_NAME, f"{OPTIMIZER_NAME}.bin", f"{SCHEDULER_NAME}.bin")


def new_training_state(identity: dict | None = None) -> dict:
    """
    The training state of a new run, as a checkpoint's training_state.json holds it, with the run's `identity`:
    what it trains, which a resume must match (see [`identity_problems`]).
    """
    return {"global_step": 0, "images_seen": 0, "train_seconds": 0.0, "run_identity": identity}


def checkpoint_step(checkpoint: Path) -> int:
    """The step of a checkpoint folder `checkpoint-N`: N."""
    return int(CHECKPOINT_PATTERN.match(checkpoint.name).group(1))


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints of a run, oldest first (a half-written one has a temporary name and is not listed)."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if CHECKPOINT_PATTERN.match(p.name) and p.is_dir()), key=checkpoint_step)


def checkpoint_problem(checkpoint: Path, num_registered: int) -> str | None:
    """
    What makes a checkpoint folder unusable, or None if it is complete and its files are intact.

    Each file is checked by its format, the safetensors header against the file's size and every torch archive
    (optimiser, lr schedule, registered objects, random states) against its CRCs, so that a missing, truncated or
    damaged file is named here, before any work, rather than by a raw error from deep inside `accelerator.load_state`.

    Args:
        checkpoint (`Path`): a folder written by [`save_checkpoint`].
        num_registered (`int`): how many objects the run to resume registers with
            `accelerator.register_for_checkpointing` (the EMA of [`make_ema`], say); their files must be there.

    Returns:
        `str` or `None`: the problem, e.g. `"model.safetensors is missing"`.
    """
    if not checkpoint.is_dir():
        return "there is no such folder"
    required = [TRAINING_STATE, *CHECKPOINT_FILES, *(f"custom_checkpoint_{i}.pkl" for i in range(num_registered))]
    missing = [name for name in required if not (checkpoint / name).is_file()]
    if missing:
        return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
    try:
        state = json.loads((checkpoint / TRAINING_STATE).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"{TRAINING_STATE} is not valid JSON ({error})"
    if not (isinstance(state, dict) and all(isinstance(state.get(key), int) for key in ("global_step", "images_seen"))
            and isinstance(state.get("train_seconds"), (int, float))):
        return f"{TRAINING_STATE} does not hold global_step, images_seen and train_seconds"
    for path in sorted(checkpoint.iterdir()):
        try:
            if path.suffix == ".safetensors":
                with safe_open(path, framework="pt"):
                    pass
            elif path.suffix in (".bin", ".pkl"):  # torch.save archives
                with zipfile.ZipFile(path) as archive:
                    damaged = archive.testzip()
                if damaged is not None:
                    return f"{path.name} is damaged (a CRC error in {damaged})"
        except (SafetensorError, zipfile.BadZipFile, OSError) as error:
            return f"{path.name} is truncated or damaged ({error})"
    return None


def recorded_identity(checkpoint: Path) -> dict | None:
    """
    The run identity that `checkpoint`'s training_state.json records: None where it records none (written by an older
    version) or cannot be read (which [`checkpoint_problem`] names).
    """
    try:
        state = json.loads((checkpoint / TRAINING_STATE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return state.get("run_identity") if isinstance(state, dict) else None


def identity_differences(recorded: dict, identity: dict) -> list[str]:
    """
    Each entry of `identity` (option values such as `{"guidance_scale": 1.5}`, or a hash of the teacher's weights) that
    `recorded` holds with another value, as `"guidance_scale: 1.5 there, 3.0 now"`.
    """
    identity = json.loads(json.dumps(identity))  # as the checkpoint holds it: tuples as lists
    return [f"{name}: {recorded.get(name)!r} there, {value!r} now"
            for name, value in identity.items() if recorded.get(name) != value]


def identity_problems(checkpoint: Path, identity: dict | None) -> list[str]:
    """
    How the run that wrote `checkpoint` differs from this one in what it trains ([`identity_differences`]). A
    checkpoint written before runs recorded their identity cannot be checked: it is resumed with a warning.
    """
    if identity is None:
        return []
    recorded = recorded_identity(checkpoint)
    if recorded is None:
        logger.warning(f"{checkpoint} records no run identity (written by an older version): the options it was "
                       "written with cannot be checked.", main_process_only=True)
        return []
    return identity_differences(recorded, identity)


def _other_options(checkpoint: Path, differences: list[str]) -> str:
    # The refusal of a resume from `checkpoint`, as a usage error and as resolve_checkpoint's ValueError.
    return (f"--resume_from_checkpoint {checkpoint} was written by a run with other options "
            f"({'; '.join(differences)}); resume with the options it was written with, or start a new run in another "
            "--output_dir")


def resume_problems(resume_from_checkpoint: str | None, run_dir: Path, identity: dict) -> list[str]:
    """
    The usage error of a resume that [`resolve_checkpoint`] would refuse for what it trains, found with the options.
    `identity` holds the entries of the run's identity that the options alone set; they are compared with those that
    the checkpoint `--resume_from_checkpoint` names records, for `latest` the newest checkpoint of `run_dir` that
    records one (a folder's checkpoints share one identity: a resume with another is refused). Only training_state.json
    is read, so that the user hears of it before any model or data is loaded; [`resolve_checkpoint`] then checks the
    checkpoint it resumes, its files and the whole identity.
    """
    if resume_from_checkpoint is None:
        return []
    if resume_from_checkpoint == "latest":
        candidates = reversed(list_checkpoints(run_dir))
    else:
        candidates = [Path(resume_from_checkpoint)]
    for checkpoint in candidates:
        recorded = recorded_identity(checkpoint)
        if recorded is not None:
            differences = identity_differences(recorded, identity)
            return [_other_options(checkpoint, differences)] if differences else []
    return []


def resolve_checkpoint(resume_from_checkpoint: str | None, run_dir: Path, num_registered: int,
                       identity: dict | None = None) -> Path | None:
    """
    The checkpoint that `--resume_from_checkpoint` names, or None to start fresh. `latest` is the newest complete
    checkpoint of `run_dir`: newer ones that are incomplete or damaged are skipped with a warning. A checkpoint named
    by its path must be usable. `num_registered` is that of [`checkpoint_problem`].

    Raises:
        `ValueError`: also when the checkpoint was written by a run that trained something else than `identity`
            says this one does ([`identity_problems`]), naming each difference.
    """
    checkpoint = _usable_checkpoint(resume_from_checkpoint, run_dir, num_registered)
    if checkpoint is not None:
        differences = identity_problems(checkpoint, identity)
        if differences:
            raise ValueError(_other_options(checkpoint, differences) + ".")
    return checkpoint


def _usable_checkpoint(resume_from_checkpoint: str | None, run_dir: Path, num_registered: int) -> Path | None:
    # The checkpoint `resolve_checkpoint` resumes, before its identity is compared.
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(run_dir)
        if not checkpoints:
            logger.warning(f"No checkpoint in {run_dir / CHECKPOINTS}: starting a new run.", main_process_only=True)
            return None
        skipped = []
        for checkpoint in reversed(checkpoints):
            problem = checkpoint_problem(checkpoint, num_registered)
            if problem is None:
                return checkpoint
            logger.warning(f"Skipping the checkpoint {checkpoint}: {problem}.", main_process_only=True)
            skipped.append(f"{checkpoint.name}: {problem}")
        raise ValueError(
            f"--resume_from_checkpoint latest: no checkpoint in {run_dir / CHECKPOINTS} can be resumed "
            f"({'; '.join(skipped)}). Remove them to start a new run there, or choose another --output_dir."
        )
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {path}: no checkpoint there (expected a folder written by this script, "
            f"with {TRAINING_STATE}), or pass `latest`."
        )
    problem = checkpoint_problem(path, num_registered)
    if problem is not None:
        raise ValueError(f"--resume_from_checkpoint {path} cannot be resumed: {problem}.")
    return path


def output_dir_problems(output_dir: Path, resuming: bool) -> list[str]:
    """
    What makes `output_dir` the wrong place for a run: it is a file, it holds anything but a run's own output, or
    it holds a previous run that is not being resumed. Checked with the options, so that a usage error names it
    before anything is loaded or created.
    """
    if output_dir.exists() and not output_dir.is_dir():
        return [f"--output_dir {output_dir} exists and is not a folder"]
    if not output_dir.is_dir():
        return []
    foreign = sorted(p.name for p in output_dir.iterdir() if p.name not in RUN_ENTRIES and not p.name.startswith("."))
    if foreign:
        return [f"--output_dir {output_dir} already holds files a run did not write ({', '.join(foreign[:5])}); "
                "choose an empty or new folder so that nothing there is overwritten"]
    if list_checkpoints(output_dir) and not resuming:
        return [f"--output_dir {output_dir} holds checkpoints of an earlier run; pass --resume_from_checkpoint latest "
                "to continue it, or choose another folder"]
    return []


def check_output_dir(output_dir: Path, resuming: bool) -> None:
    """
    Refuse an output_dir with [`output_dir_problems`] (for callers that did not parse the options) or one that cannot
    be created or written to; then create it. All of this is found before training, not at the first checkpoint
    hundreds of steps later.
    """
    problems = output_dir_problems(output_dir, resuming)
    if problems:
        raise FileExistsError(problems[0] + ".")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise OSError(f"--output_dir {output_dir} cannot be created or written to: {error}") from error


def resume_state(accelerator: Accelerator, checkpoint: Path | None, run_dir: Path, identity: dict | None = None) -> dict:
    """
    The training state to go on from: a new run's with its `identity`, or that of `checkpoint` (from
    [`resolve_checkpoint`], which checked the identity), whose weights, optimiser, lr schedule, registered objects
    and random states are loaded into the prepared objects. Resuming from an older checkpoint than the newest rolls
    the run back: the newer ones are the abandoned run's, which [`save_checkpoint`] deletes once this run has a
    checkpoint of its own.
    """
    if checkpoint is None:
        return new_training_state(identity)
    try:
        accelerator.load_state(str(checkpoint))
    except (RuntimeError, ValueError, KeyError) as error:  # intact files that do not fit this model or optimiser
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint} does not fit this run ({error}); resume with the model and "
            "optimiser options it was written with."
        ) from error
    state = json.loads((checkpoint / TRAINING_STATE).read_text())
    if state.get("run_identity") is None:  # an older checkpoint: its own checkpoints from now on record the identity
        state["run_identity"] = identity
    accelerator.print(f"Resumed from {checkpoint} at step {state['global_step']}.")
    newer = [p.name for p in list_checkpoints(run_dir) if checkpoint_step(p) > state["global_step"]]
    if newer:
        logger.warning(
            f"Rolling back to step {state['global_step']}: the newer checkpoints {', '.join(newer)} belong to the "
            "abandoned run and are deleted once this run writes its first checkpoint.", main_process_only=True,
        )
    return state


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: dict, limit: int) -> None:
    """
    Save everything a resume needs (`accelerator.save_state` and `state`) to `run_dir/checkpoints/checkpoint-<step>`,
    keeping the newest `limit` checkpoints. The folder is written under a temporary name and renamed when complete,
    so that a run killed mid-save leaves no checkpoint that looks whole. Called on every rank.
    """
    final = run_dir / CHECKPOINTS / f"checkpoint-{state['global_step']}"
    temporary, retired = final.with_name(f".tmp-{final.name}"), final.with_name(f".old-{final.name}")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))  # every rank writes its RNG state; the main rank the rest
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temporary / TRAINING_STATE).write_text(json.dumps(state) + "\n")
        # A run rolled back to an older checkpoint re-writes the steps after it: the abandoned run's checkpoint of
        # this step is moved aside first, since a folder cannot be renamed onto a non-empty one.
        if final.exists():
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(final, retired)
        os.replace(temporary, final)  # a checkpoint exists complete, or not at all
        shutil.rmtree(retired, ignore_errors=True)
        # Checkpoints newer than this one are the abandoned run's: once this run has one of its own they go, so
        # that `latest` and --checkpoints_total_limit only ever see one history.
        checkpoints = list_checkpoints(run_dir)
        kept = checkpoints.index(final) + 1
        for stale in checkpoints[kept:] + checkpoints[: max(kept - limit, 0)]:
            shutil.rmtree(stale)
    accelerator.wait_for_everyone()
