"""What a training run writes beside its model: the run record (command, options with secrets redacted, data, steps,
time, hardware), and the pipeline with that record, swapped in whole so that an interrupted save leaves no half."""

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers import DiffusionPipeline

from ...data import describe_training_data
from ..redaction import redact, redact_command
from ..run_folder import PIPELINE_ENTRIES, TRAINING_CONFIG


def recorded_options(args: argparse.Namespace) -> dict:
    """
    The options as written to training_config.json and the logs: everything but the Hub token, and no text shaped like
    a token either (one pasted into the wrong option).
    """
    return {name: redact(value) if isinstance(value, str) else value
            for name, value in vars(args).items() if name != "hub_token"}


def describe_hardware(accelerator: Accelerator) -> str:
    """What the run trained on, for the record: the GPUs, or the CPU model with its cores and threads."""
    if accelerator.device.type == "cuda":
        return f"{accelerator.num_processes} × {torch.cuda.get_device_name(accelerator.device)}"
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return (f"{cpu}, {os.cpu_count()} cores, {accelerator.num_processes} process(es) × "
            f"{torch.get_num_threads()} thread(s), no GPU")


def run_record(accelerator: Accelerator, script: str, args: argparse.Namespace, state: dict, model) -> dict:
    """
    What a run did, as saved beside the model it trained: the command line and the options (secrets redacted), the
    data set it trained on, the steps, images and minutes of training (from `state`, summed over resumed runs) and what it ran on.

    Args:
        accelerator: the run's accelerator.
        script: the script as the command line should name it, e.g. `"scripts/train.py"`.
        args: the parsed options.
        state: the training state of [`new_training_state`], as the loop has counted it.
        model: the model being trained (wrapped or not), whose parameters are counted.
    """
    return {
        "command": " ".join([script, *redact_command(sys.argv[1:])]),
        "args": recorded_options(args),
        "data": describe_training_data(args.data_dir),
        "global_step": state["global_step"],
        "images_seen": state["images_seen"],
        "train_minutes": round(state["train_seconds"] / 60, 2),
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "hardware": describe_hardware(accelerator),
        "mixed_precision": accelerator.mixed_precision,
        "num_parameters": accelerator.unwrap_model(model).num_parameters(),
        "torch_version": torch.__version__,
    }


def write_pipeline(pipeline: DiffusionPipeline, run_dir: Path, record: dict) -> None:
    """
    Write the pipeline, and the run's `record` as training_config.json, into run_dir next to checkpoints/ and logs/:
    it is written whole to a staging folder, then each entry is swapped in by rename, so an interrupted save never
    leaves a half-written file in place. Called on the main process.
    """
    staging = run_dir / ".tmp-pipeline"
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging)
    (staging / TRAINING_CONFIG).write_text(json.dumps(record, indent=2) + "\n")
    swap_in(staging, run_dir, PIPELINE_ENTRIES)


def swap_in(staging: Path, target_dir: Path, names) -> None:
    """
    Move the entries `names` of the fully written folder `staging` into `target_dir`, each by rename (the one it
    replaces is first moved aside, then deleted), and remove `staging`: an interrupted save never leaves a
    half-written file in place.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        target, retired = target_dir / name, target_dir / f".old-{name}"
        if target.exists():
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(target, retired)
        os.replace(staging / name, target)
        if retired.is_dir():
            shutil.rmtree(retired)
        elif retired.exists():
            retired.unlink()
    shutil.rmtree(staging)
