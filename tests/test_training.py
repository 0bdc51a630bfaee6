"""Tests of `mnist_diffusion/training.py`, on the generated MNIST of `tests/synthetic_mnist.py`: what they check (the
loop, checkpoints, resuming, two processes, the options, what is recorded and pushed) does not depend on real digits,
so they run wherever the tests do."""

import json
import os
import shutil
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
from mnist_diffusion.training import parse_args, recorded_options, train

from .hub_server import HubServer

ROOT = Path(__file__).resolve().parents[1]

TINY = ["--block_out_channels", "8", "16", "16", "--attention_head_dim", "8", "--norm_num_groups", "4",
        "--train_batch_size", "16", "--lr_warmup_steps", "2", "--logger", "none", "--validation_steps", "1000"]
# Token-shaped (see mnist_diffusion/redaction.py), and one that the test Hub accepts.
HUB_TOKEN = "hf_" + "LoopbackHubTestToken0123456789"


def tiny_args(data_dir, output_dir, *extra):
    return ["--data_dir", str(data_dir), "--output_dir", str(output_dir), *TINY, *extra]


def unet_weights(folder: Path) -> dict:
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def checkpoint_names(run: Path) -> list[str]:
    return sorted((p.name for p in (run / "checkpoints").iterdir()), key=lambda name: int(name.split("-")[1]))


def subprocess_env(**extra):
    # One thread per process keeps runs bit-reproducible and leaves the second core free.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def test_smoke_training_writes_a_loadable_pipeline(tmp_path, synthetic_mnist):
    out = tmp_path / "run"
    train(parse_args(tiny_args(synthetic_mnist, out, "--max_train_steps", "6", "--checkpointing_steps", "4",
                               "--validation_steps", "6", "--validation_images_per_digit", "1",
                               "--validation_inference_steps", "2", "--logger", "tensorboard")))
    assert {p.name for p in out.iterdir()} == {"model_index.json", "unet", "scheduler", "training_config.json",
                                               "checkpoints", "logs", "samples"}
    assert checkpoint_names(out) == ["checkpoint-4", "checkpoint-6"]
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
        (["--train_batch_size", "100000"],
         "--train_batch_size 100000 is more than the 60000 images of the MNIST training split"),
        (["--learning_rate=-1e-3"], "--learning_rate must be positive, got -0.001"),
        (["--cond_drop_prob", "1.5"], "--cond_drop_prob must be in [0, 1), got 1.5"),
        (["--block_out_channels", "8", "16", "16", "16"], "28 pixels halve at most twice"),
        (["--ema_inv_gamma", "0"], "--ema_inv_gamma must be positive, got 0.0"),
        (["--ema_power=-1"], "--ema_power must be positive, got -1.0"),
        (["--attention_head_dim", "5"], "--attention_head_dim 5 must divide the width of every level with attention, "
                                        "[16]"),
        (["--attention_resolutions", "28", "7", "--attention_head_dim", "16"],
         "--attention_head_dim 16 must divide the width of every level with attention, [8, 16]"),
        (["--seed", "1099511627776"], "--seed must be below 2**31 = 2147483648, got 1099511627776"),
        (["--adam_beta1", "1.5"], "--adam_beta1 must be in [0, 1), got 1.5"),
        (["--adam_beta2=-0.1"], "--adam_beta2 must be in [0, 1), got -0.1"),
        (["--adam_epsilon=-1"], "--adam_epsilon must be ≥ 0, got -1.0"),
        (["--adam_weight_decay=-1"], "--adam_weight_decay must be ≥ 0, got -1.0"),
        (["--validation_guidance_scale=-2"], "--validation_guidance_scale must be ≥ 0, got -2.0"),
    ],
)
def test_nonsense_options_fail_before_training(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        parse_args(tiny_args(tmp_path / "data", tmp_path / "run", *extra))
    assert message in capsys.readouterr().err


def test_a_batch_larger_than_a_small_data_set_fails_before_training(tmp_path, synthetic_mnist):
    steps = []
    with pytest.raises(ValueError, match="--train_batch_size 400 is more than the 320 images of .*synthetic-mnist"):
        train(parse_args(tiny_args(synthetic_mnist, tmp_path / "run", "--train_batch_size", "400")),
              on_step=lambda *_: steps.append(1))
    assert steps == []


def test_missing_data_fails_before_training(tmp_path):
    args = parse_args(["--data_dir", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "run"), *TINY])
    os.environ["MNIST_MIRROR"] = "http://127.0.0.1:9/"  # nothing listens there: the download fails at once
    try:
        with pytest.raises(MNISTDataError, match="train-images-idx3-ubyte.gz is missing from .*nowhere"):
            train(args)
    finally:
        del os.environ["MNIST_MIRROR"]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_output_dir_and_checkpoint_fail_before_training(tmp_path, synthetic_mnist):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="thesis.tex"):
        train(parse_args(tiny_args(synthetic_mnist, foreign, "--max_train_steps", "1")))
    assert (foreign / "thesis.tex").read_text() == "precious" and len(list(foreign.iterdir())) == 1
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        train(parse_args(tiny_args(synthetic_mnist, tmp_path / "run", "--resume_from_checkpoint",
                                   str(tmp_path / "missing"))))


def test_an_output_dir_that_cannot_be_created_fails_before_training(tmp_path, synthetic_mnist):
    (tmp_path / "a-file").write_text("")
    steps = []
    with pytest.raises(OSError, match="--output_dir .*a-file/sub cannot be created"):
        train(parse_args(tiny_args(synthetic_mnist, tmp_path / "a-file" / "sub", "--max_train_steps", "1")),
              on_step=lambda *_: steps.append(1))
    assert steps == []


def test_earlier_run_is_not_overwritten_without_resume(tmp_path, synthetic_mnist):
    out = tmp_path / "run"
    train(parse_args(tiny_args(synthetic_mnist, out, "--max_train_steps", "2", "--checkpointing_steps", "2")))
    with pytest.raises(FileExistsError, match="--resume_from_checkpoint latest"):
        train(parse_args(tiny_args(synthetic_mnist, out, "--max_train_steps", "4")))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synthetic_mnist):
    """A run of 6 steps with checkpoints at 2, 4 and 6, to copy and then resume, roll back or damage."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(parse_args(tiny_args(synthetic_mnist, out, "--max_train_steps", "6", "--checkpointing_steps", "2")))
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_resuming_from_an_older_checkpoint_rolls_back(tmp_path, synthetic_mnist, finished_run, caplog):
    # Rolling back: the steps after checkpoint-2 are trained again (here with another learning rate); the new run's
    # checkpoint-4 replaces the old one, and checkpoint-6 of the abandoned run goes once the new run has one.
    out = copy_of(finished_run, tmp_path)
    abandoned = (out / "checkpoints" / "checkpoint-4" / "model.safetensors").read_bytes()
    train(parse_args(tiny_args(synthetic_mnist, out, "--max_train_steps", "4", "--checkpointing_steps", "2",
                               "--learning_rate", "3e-3", "--resume_from_checkpoint",
                               str(out / "checkpoints" / "checkpoint-2"))))
    assert "newer checkpoints checkpoint-4, checkpoint-6 belong to the abandoned run" in caplog.text
    assert checkpoint_names(out) == ["checkpoint-2", "checkpoint-4"]
    assert not list((out / "checkpoints").glob(".*"))  # no .tmp- or .old- folder left
    checkpoint = out / "checkpoints" / "checkpoint-4"
    assert (checkpoint / "model.safetensors").read_bytes() != abandoned
    assert json.loads((checkpoint / "training_state.json").read_text())["global_step"] == 4
    record = json.loads((out / "training_config.json").read_text())
    assert record["global_step"] == 4 and record["args"]["learning_rate"] == 3e-3  # the pipeline of the new run


def damage(checkpoint: Path, how: str) -> None:
    if how == "empty":
        for path in checkpoint.iterdir():
            path.unlink()
    elif how == "no-state":
        (checkpoint / "training_state.json").unlink()
    elif how == "no-model":
        (checkpoint / "model.safetensors").unlink()
    elif how == "state-not-json":
        (checkpoint / "training_state.json").write_text('{"global_step": 4,')
    elif how == "state-without-step":
        (checkpoint / "training_state.json").write_text('{"images_seen": 64}')
    else:  # truncate a file to half its size, as a full disk or a killed copy would
        name = {"truncated-model": "model.safetensors", "truncated-optimizer": "optimizer.bin",
                "truncated-ema": "custom_checkpoint_0.pkl"}[how]
        content = (checkpoint / name).read_bytes()
        (checkpoint / name).write_bytes(content[: len(content) // 2])


DAMAGES = {
    "empty": "training_state.json, model.safetensors, optimizer.bin, scheduler.bin, custom_checkpoint_0.pkl are "
             "missing",
    "no-state": "training_state.json is missing",
    "no-model": "model.safetensors is missing",
    "state-not-json": "training_state.json is not valid JSON",
    "state-without-step": "training_state.json does not hold global_step, images_seen and train_seconds",
    "truncated-model": "model.safetensors is truncated or damaged",
    "truncated-optimizer": "optimizer.bin is truncated or damaged",
    "truncated-ema": "custom_checkpoint_0.pkl is truncated or damaged",
}


@pytest.mark.parametrize("how", list(DAMAGES))
def test_a_damaged_checkpoint_is_named_before_training(tmp_path, synthetic_mnist, finished_run, how):
    out = copy_of(finished_run, tmp_path)
    checkpoint = out / "checkpoints" / "checkpoint-4"
    damage(checkpoint, how)
    steps = []
    with pytest.raises(ValueError) as info:
        train(parse_args(tiny_args(synthetic_mnist, out, "--max_train_steps", "8", "--checkpointing_steps", "2",
                                   "--resume_from_checkpoint", str(checkpoint))), on_step=lambda *_: steps.append(1))
    assert str(info.value).startswith(f"--resume_from_checkpoint {checkpoint} cannot be resumed: {DAMAGES[how]}")
    assert "pytorch_model.bin" not in str(info.value) and steps == []


def test_latest_skips_incomplete_checkpoints_with_a_warning(tmp_path, synthetic_mnist, finished_run, caplog, capsys):
    out = copy_of(finished_run, tmp_path)
    (out / "checkpoints" / "checkpoint-99").mkdir()  # an empty folder, as a copy killed at its start leaves
    damage(out / "checkpoints" / "checkpoint-6", "truncated-model")
    train(parse_args(tiny_args(synthetic_mnist, out, "--max_train_steps", "6", "--checkpointing_steps", "2",
                               "--resume_from_checkpoint", "latest")))
    checkpoints = out / "checkpoints"
    assert f"Skipping the checkpoint {checkpoints / 'checkpoint-99'}: training_state.json" in caplog.text
    assert f"Skipping the checkpoint {checkpoints / 'checkpoint-6'}: model.safetensors is truncated" in caplog.text
    assert f"Resumed from {checkpoints / 'checkpoint-4'} at step 4." in capsys.readouterr().out
    # Step 6 was trained again and its checkpoint re-written; the broken checkpoint-99 is gone with the old history.
    assert checkpoint_names(out) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert json.loads((out / "training_config.json").read_text())["global_step"] == 6

    for name in ("checkpoint-2", "checkpoint-4", "checkpoint-6"):
        damage(out / "checkpoints" / name, "no-model")
    with pytest.raises(ValueError, match="no checkpoint in .* can be resumed .*checkpoint-6: model.safetensors is "
                                         "missing; checkpoint-4"):
        train(parse_args(tiny_args(synthetic_mnist, out, "--resume_from_checkpoint", "latest")))


def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path, synthetic_mnist):
    # 24 steps of 16 images cross an epoch of the 320 generated ones: resuming at 16 skips into the first epoch.
    common = ["--max_train_steps", "24", "--checkpointing_steps", "8", "--cond_drop_prob", "0.2"]
    script = [sys.executable, str(ROOT / "scripts" / "train.py")]
    env = subprocess_env()
    subprocess.run([*script, *tiny_args(synthetic_mnist, tmp_path / "straight", *common)], env=env, check=True,
                   capture_output=True)

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen([*script, *tiny_args(synthetic_mnist, interrupted, *common)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (interrupted / "checkpoints" / "checkpoint-16").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "model_index.json").exists()  # it really died mid-way

    resumed = subprocess.run(
        [*script, *tiny_args(synthetic_mnist, interrupted, *common, "--resume_from_checkpoint", "latest")],
        env=env, check=True, capture_output=True, text=True,
    )
    assert "Resumed from" in resumed.stdout + resumed.stderr
    state = json.loads((interrupted / "checkpoints" / "checkpoint-24" / "training_state.json").read_text())
    assert state["global_step"] == 24 and state["images_seen"] == 24 * 16
    straight, again = unet_weights(tmp_path / "straight"), unet_weights(interrupted)  # EMA weights
    assert straight.keys() == again.keys()
    for name in straight:
        torch.testing.assert_close(again[name], straight[name], atol=1e-6, rtol=0, msg=name)


def test_two_processes_stay_in_step_on_different_data(tmp_path, synthetic_mnist):
    out, reports = tmp_path / "ddp", tmp_path / "reports"
    reports.mkdir()
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", "29517",
               str(ROOT / "tests" / "ddp_probe.py"), str(reports),
               *tiny_args(synthetic_mnist, out, "--max_train_steps", "5", "--checkpointing_steps", "5",
                          "--logger", "tensorboard")]
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
    assert checkpoint_names(out) == ["checkpoint-5"]
    checkpoint_files = {p.name for p in (out / "checkpoints" / "checkpoint-5").iterdir()}
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "random_states_1.pkl"} <= checkpoint_files
    event_files = list((out / "logs").rglob("events.out.tfevents.*"))  # named events.out.tfevents.TIME.HOST.PID.N
    assert event_files and len({f.name.split(".")[-2] for f in event_files}) == 1, event_files
    assert json.loads((out / "training_config.json").read_text())["images_seen"] == 5 * 16 * 2
    assert not list(out.glob(".tmp-*")) and not list(out.glob(".old-*"))


def test_recorded_options_hold_no_token(tmp_path):
    # The options go to training_config.json and to TensorBoard's hparams: without the token option, and without a
    # token pasted into another one.
    args = parse_args(tiny_args(tmp_path, tmp_path / f"run-{HUB_TOKEN}", "--hub_token", HUB_TOKEN))
    options = recorded_options(args)
    assert "hub_token" not in options and options["output_dir"] == str(tmp_path / "run-<redacted>")
    assert HUB_TOKEN not in json.dumps(options)


def test_push_to_hub_publishes_no_token(tmp_path, synthetic_mnist):
    # The token as typed on the command line: recorded nowhere (command, options, TensorBoard hparams, card), neither in
    # the output folder nor in the pushed repo, and still used to push.
    hub = HubServer(tokens=(HUB_TOKEN,)).start()
    try:
        out = tmp_path / "run"
        env = {k: v for k, v in subprocess_env().items() if not k.startswith("HF_") and "proxy" not in k.lower()}
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
                   HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
                   # Any other host goes to a closed local port, rather than the internet.
                   HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1,localhost")
        command = [sys.executable, str(ROOT / "scripts" / "train.py"),
                   *tiny_args(synthetic_mnist, out, "--max_train_steps", "2", "--checkpointing_steps", "2",
                              "--logger", "tensorboard"),
                   "--push_to_hub", "--hub_model_id", "someone/x", "--hub_token", HUB_TOKEN]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert hub.failures == []
        repo = hub.repos["someone/x"]
        pushed = repo.commits[repo.commit_of("main")]
    finally:
        hub.stop()

    assert {"model_index.json", "README.md", "training_config.json"} <= set(pushed)
    assert [path for path, stored in pushed.items() if HUB_TOKEN.encode() in stored.content] == []
    written = [path for path in out.rglob("*") if path.is_file()]
    assert any(path.name.startswith("events.out.tfevents") for path in written)  # the hparams were logged
    assert [path for path in written if HUB_TOKEN.encode() in path.read_bytes()] == []
    command_recorded = json.loads((out / "training_config.json").read_text())["command"]
    assert command_recorded.endswith("--push_to_hub --hub_model_id someone/x --hub_token <redacted>")
