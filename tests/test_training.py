import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mnist_diffusion import ClassConditionedUNet, MNISTDDPMPipeline
from mnist_diffusion.data import MNISTDataError
from mnist_diffusion.training import parse_args, train

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"real MNIST files not found at {MNIST_DIR}")

TINY = ["--block_out_channels", "8", "16", "16", "--attention_head_dim", "8", "--norm_num_groups", "4",
        "--train_batch_size", "16", "--lr_warmup_steps", "2", "--logger", "none", "--validation_steps", "1000"]


def tiny_args(output_dir, *extra):
    return ["--data_dir", str(MNIST_DIR), "--output_dir", str(output_dir), *TINY, *extra]


def unet_weights(folder: Path) -> dict:
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def subprocess_env(**extra):
    # One thread per process keeps runs bit-reproducible and leaves the second core free.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


@needs_mnist
def test_smoke_training_writes_a_loadable_pipeline(tmp_path):
    out = tmp_path / "run"
    train(parse_args(tiny_args(out, "--max_train_steps", "6", "--checkpointing_steps", "4", "--validation_steps", "6",
                               "--validation_images_per_digit", "1", "--validation_inference_steps", "2",
                               "--logger", "tensorboard")))
    assert {p.name for p in out.iterdir()} == {"model_index.json", "unet", "scheduler", "training_config.json",
                                               "checkpoints", "logs", "samples"}
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-4", "checkpoint-6"]
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    assert (out / "samples" / "step-000006.png").is_file()
    record = json.loads((out / "training_config.json").read_text())
    assert record["global_step"] == 6 and record["images_seen"] == 6 * 16
    pipe = MNISTDDPMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.unet, ClassConditionedUNet) and pipe.unet.config.block_out_channels == [8, 16, 16]
    image = pipe([3], num_inference_steps=3).images[0]
    assert image.size == (28, 28)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--train_batch_size", "0"], "--train_batch_size must be a positive integer, got 0"),
        (["--learning_rate=-1e-3"], "--learning_rate must be positive, got -0.001"),
        (["--cond_drop_prob", "1.5"], "--cond_drop_prob must be in [0, 1), got 1.5"),
        (["--block_out_channels", "8", "16", "16", "16"], "28 pixels halve at most twice"),
    ],
)
def test_nonsense_options_fail_before_training(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        parse_args(tiny_args(tmp_path / "run", *extra))
    assert message in capsys.readouterr().err


def test_missing_data_fails_before_training(tmp_path):
    args = parse_args(["--data_dir", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "run"), *TINY])
    os.environ["MNIST_MIRROR"] = "http://127.0.0.1:9/"  # nothing listens there: the download fails at once
    try:
        with pytest.raises(MNISTDataError, match="train-images-idx3-ubyte.gz is missing from .*nowhere"):
            train(args)
    finally:
        del os.environ["MNIST_MIRROR"]
    assert not (tmp_path / "run" / "checkpoints").exists()


@needs_mnist
def test_bad_output_dir_and_checkpoint_fail_before_training(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="thesis.tex"):
        train(parse_args(tiny_args(foreign, "--max_train_steps", "1")))
    assert (foreign / "thesis.tex").read_text() == "precious" and len(list(foreign.iterdir())) == 1
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        train(parse_args(tiny_args(tmp_path / "run", "--resume_from_checkpoint", str(tmp_path / "missing"))))


@needs_mnist
def test_earlier_run_is_not_overwritten_without_resume(tmp_path):
    out = tmp_path / "run"
    train(parse_args(tiny_args(out, "--max_train_steps", "2", "--checkpointing_steps", "2")))
    with pytest.raises(FileExistsError, match="--resume_from_checkpoint latest"):
        train(parse_args(tiny_args(out, "--max_train_steps", "4")))


@needs_mnist
def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path):
    common = ["--max_train_steps", "24", "--checkpointing_steps", "8", "--cond_drop_prob", "0.2"]
    script = [sys.executable, str(ROOT / "scripts" / "train.py")]
    env = subprocess_env()
    subprocess.run([*script, *tiny_args(tmp_path / "straight", *common)], env=env, check=True, capture_output=True)

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen([*script, *tiny_args(interrupted, *common)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (interrupted / "checkpoints" / "checkpoint-16").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "model_index.json").exists()  # it really died mid-way

    resumed = subprocess.run([*script, *tiny_args(interrupted, *common, "--resume_from_checkpoint", "latest")],
                             env=env, check=True, capture_output=True, text=True)
    assert "Resumed from" in resumed.stdout + resumed.stderr
    state = json.loads((interrupted / "checkpoints" / "checkpoint-24" / "training_state.json").read_text())
    assert state["global_step"] == 24 and state["images_seen"] == 24 * 16
    straight, again = unet_weights(tmp_path / "straight"), unet_weights(interrupted)  # EMA weights
    assert straight.keys() == again.keys()
    for name in straight:
        torch.testing.assert_close(again[name], straight[name], atol=1e-6, rtol=0, msg=name)


@needs_mnist
def test_two_processes_stay_in_step_on_different_data(tmp_path):
    out, reports = tmp_path / "ddp", tmp_path / "reports"
    reports.mkdir()
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
               str(ROOT / "tests" / "ddp_probe.py"), str(reports),
               *tiny_args(out, "--max_train_steps", "5", "--checkpointing_steps", "5", "--logger", "tensorboard")]
    result = subprocess.run(command, env=subprocess_env(ACCELERATE_USE_CPU="true"), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (json.loads((reports / f"rank{r}.json").read_text()) for r in (0, 1))
    for report in (rank0, rank1):
        assert report["num_processes"] == 2 and report["distributed_type"] == "DistributedType.MULTI_CPU"
    assert [r["step"] for r in rank0["records"]] == [1, 2, 3, 4, 5]
    for a, b in zip(rank0["records"], rank1["records"]):
        assert a["weights"] == pytest.approx(b["weights"], rel=1e-9, abs=1e-9), f"ranks diverged at step {a['step']}"
        assert a["batch"] != b["batch"], f"both ranks saw the same batch at step {a['step']}"
    assert rank0["records"][0]["weights"] != rank0["records"][-1]["weights"]
    # One set of outputs, written once: a single checkpoint holding both ranks' RNG states, one log, one pipeline.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-5"]
    checkpoint_files = {p.name for p in (out / "checkpoints" / "checkpoint-5").iterdir()}
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "random_states_1.pkl"} <= checkpoint_files
    event_files = list((out / "logs").rglob("events.out.tfevents.*"))  # named events.out.tfevents.TIME.HOST.PID.N
    assert event_files and len({f.name.split(".")[-2] for f in event_files}) == 1, event_files
    assert json.loads((out / "training_config.json").read_text())["images_seen"] == 5 * 16 * 2
    assert not list(out.glob(".tmp-*")) and not list(out.glob(".old-*"))
