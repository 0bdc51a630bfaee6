"""Tests of `mnist_diffusion/lab/training/` (the DDPM job and the shared pieces), on the generated MNIST of `mnist_diffusion/lab/synthetic_mnist.py`: what they check (the
loop, checkpoints, resuming, two processes, the options, what is recorded and pushed) does not depend on real digits,
so they run wherever the tests do."""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel, compute_snr
from safetensors.torch import load_file

from mnist_diffusion import ClassConditionedUNet, MNISTDDPMPipeline
from mnist_diffusion.data import MNISTDataError
from mnist_diffusion.scheduling_mnist_ddpm import MNISTDDPMScheduler
from mnist_diffusion.lab.training import ddpm, loop
from mnist_diffusion.lab.training.checkpoints import (
    checkpoint_problem,
    new_training_state,
    resolve_checkpoint,
    resume_state,
    save_checkpoint,
)
from mnist_diffusion.lab.training.ddpm import build_parser, parse_args, train
from mnist_diffusion.lab.training.loop import (
    TrainingLength,
    make_accelerator,
    should_stop,
    training_length,
)
from mnist_diffusion.lab.training.record import recorded_options
from mnist_diffusion.lab.training.options import (
    add_checkpoint_arguments,
    add_ema_arguments,
    add_optimizer_arguments,
    check_checkpoint_arguments,
    check_ema_arguments,
    check_optimizer_arguments,
    parse_checked,
)

from .hub_server import HubServer

ROOT = Path(__file__).resolve().parents[1]

TINY = ["--block_out_channels", "8", "16", "16", "--attention_head_dim", "8", "--norm_num_groups", "4",
        "--train_batch_size", "16", "--lr_warmup_steps", "2", "--logger", "none", "--validation_steps", "1000"]
# Token-shaped (see mnist_diffusion/lab/redaction.py), and one that the test Hub accepts.
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


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_min_snr_weights_match_diffusers(prediction_type, beta_schedule):
    # diffusers' own compute_snr and the weighting of its training examples (train_text_to_image.py).
    ours = MNISTDDPMScheduler(beta_schedule=beta_schedule, prediction_type=prediction_type)
    timesteps = torch.arange(1000)
    snr = compute_snr(DDPMScheduler(beta_schedule=beta_schedule), timesteps)
    expected = torch.stack([snr, torch.full_like(snr, 5.0)], dim=1).min(dim=1)[0]
    if prediction_type == "epsilon":
        expected = expected / snr
    elif prediction_type == "v_prediction":
        expected = expected / (snr + 1)
    torch.testing.assert_close(ddpm.min_snr_weights(ours, timesteps, 5.0), expected, rtol=1e-5, atol=1e-6)


def test_min_snr_weighting_down_weights_only_the_low_noise_steps():
    scheduler = MNISTDDPMScheduler()
    timesteps = torch.arange(1000)
    weights = ddpm.min_snr_weights(scheduler, timesteps, 5.0)
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    assert torch.equal(weights[snr <= 5], torch.ones(int((snr <= 5).sum())))
    assert (weights[snr > 5] < 1).all() and weights[0] == pytest.approx(5 / snr[0].item(), rel=1e-5)


def test_a_gamma_above_every_snr_gives_l_simple():
    model = ClassConditionedUNet(block_out_channels=(8, 16, 16), attention_head_dim=8, norm_num_groups=4)
    scheduler = MNISTDDPMScheduler()
    images, labels = torch.rand(6, 1, 28, 28) * 2 - 1, torch.arange(6)
    losses = []
    for gamma in (None, 1e9):
        torch.manual_seed(0)
        losses.append(ddpm.ddpm_loss(model, scheduler, images, labels, 0.1, 10, snr_gamma=gamma))
    torch.testing.assert_close(losses[0], losses[1])
    torch.manual_seed(0)
    assert ddpm.ddpm_loss(model, scheduler, images, labels, 0.1, 10, snr_gamma=5.0) < losses[0]


def test_channels_last_min_snr_run_resumes_and_loads(tmp_path, synthetic_mnist):
    out = tmp_path / "run"
    options = ["--channels_last", "--snr_gamma", "5", "--checkpointing_steps", "2"]
    train(parse_args(tiny_args(synthetic_mnist, out, "--max_train_steps", "2", *options)))
    train(parse_args(tiny_args(synthetic_mnist, out, "--max_train_steps", "4", "--resume_from_checkpoint", "latest",
                               *options)))
    record = json.loads((out / "training_config.json").read_text())
    assert record["global_step"] == 4 and record["args"]["channels_last"] and record["args"]["snr_gamma"] == 5.0
    pipe = MNISTDDPMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe([1], num_inference_steps=2, output_type="np").images.shape == (1, 28, 28, 1)


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
        (["--snr_gamma", "0"], "--snr_gamma must be positive, got 0.0"),
        (["--snr_gamma", "nan"], "--snr_gamma must be positive, got nan"),
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
    with pytest.raises(SystemExit) as exit_info:  # a usage error, found with the options
        parse_args(tiny_args(synthetic_mnist, foreign, "--max_train_steps", "1"))
    assert exit_info.value.code == 2
    with pytest.raises(FileExistsError, match="thesis.tex"):  # and by train() itself, for options built in code
        train(build_parser().parse_args(tiny_args(synthetic_mnist, foreign, "--max_train_steps", "1")))
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
    with pytest.raises(SystemExit):
        parse_args(tiny_args(synthetic_mnist, out, "--max_train_steps", "4"))
    with pytest.raises(FileExistsError, match="--resume_from_checkpoint latest"):
        train(build_parser().parse_args(tiny_args(synthetic_mnist, out, "--max_train_steps", "4")))


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


def test_a_resume_with_other_model_options_is_refused_naming_each(tmp_path, synthetic_mnist, finished_run, capsys):
    out = copy_of(finished_run, tmp_path)
    before = checkpoint_names(out)
    changed = tiny_args(synthetic_mnist, out, "--max_train_steps", "8", "--prediction_type", "v_prediction",
                        "--cond_drop_prob", "0.2", "--resume_from_checkpoint", "latest")
    with pytest.raises(SystemExit) as exit_info:  # a usage error, found with the options
        parse_args(changed)
    assert exit_info.value.code == 2
    usage_error = capsys.readouterr().err
    with pytest.raises(ValueError) as error:  # and by train() itself, for options built in code
        train(build_parser().parse_args(changed))
    for message in (usage_error, str(error.value)):
        assert (f"--resume_from_checkpoint {out / 'checkpoints' / 'checkpoint-6'} was written by a run with other "
                "options") in message
        assert "prediction_type: 'epsilon' there, 'v_prediction' now" in message
        assert "cond_drop_prob: 0.1 there, 0.2 now" in message
    assert checkpoint_names(out) == before
    # The options that do not change what is trained may change: a longer run, another learning rate.
    train(parse_args(tiny_args(synthetic_mnist, out, "--max_train_steps", "8", "--learning_rate", "2e-3",
                               "--resume_from_checkpoint", "latest", "--checkpointing_steps", "2")))
    assert checkpoint_names(out)[-1] == "checkpoint-8"


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


def kill_at_checkpoint(command: list[str], run_dir: Path, step: int, env: dict, timeout: float = 180) -> None:
    """Run `command`, kill -9 it as soon as `run_dir` holds checkpoint-<step>, and check it died before its end."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not (run_dir / "checkpoints" / f"checkpoint-{step}").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "model_index.json").exists()  # it really died mid-way


def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path, synthetic_mnist):
    # 24 steps of 16 images cross an epoch of the 320 generated ones: resuming at 16 skips into the first epoch.
    common = ["--max_train_steps", "24", "--checkpointing_steps", "8", "--cond_drop_prob", "0.2"]
    script = [sys.executable, str(ROOT / "scripts" / "train.py")]
    env = subprocess_env()
    subprocess.run([*script, *tiny_args(synthetic_mnist, tmp_path / "straight", *common)], env=env, check=True,
                   capture_output=True)

    interrupted = tmp_path / "interrupted"
    kill_at_checkpoint([*script, *tiny_args(synthetic_mnist, interrupted, *common)], interrupted, 16, env)

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


def test_the_main_rank_clock_decides_the_time_budget_with_the_flag_on_the_device(monkeypatch):
    # Under NCCL a collective takes tensors on the GPU: the flag must be on accelerator.device (here "meta", which no
    # CPU default would give). And every rank follows the main rank's verdict, whatever its own clock says.
    sent, main_rank_verdicts = [], iter([1.0, 0.0])  # the main rank is out of time, then in time

    def broadcast(flag, from_process):
        sent.append((flag.device, from_process))
        return torch.tensor(next(main_rank_verdicts))

    monkeypatch.setattr(loop, "broadcast", broadcast)
    accelerator = SimpleNamespace(device=torch.device("meta"))
    in_time = {"global_step": 5, "images_seen": 80, "train_seconds": 0.0}
    assert should_stop(accelerator, in_time, max_train_steps=10, max_train_minutes=1.0)
    out_of_time = {**in_time, "train_seconds": 120.0}
    assert not should_stop(accelerator, out_of_time, max_train_steps=10, max_train_minutes=1.0)
    assert sent == [(torch.device("meta"), 0)] * 2
    # At the last step, or without a budget, every rank knows by itself: no collective.
    assert should_stop(accelerator, {**in_time, "global_step": 10}, 10, 1.0)
    assert not should_stop(accelerator, out_of_time, 10, None)
    assert len(sent) == 2


STOP_PROBE = """
import json, sys
from pathlib import Path
from accelerate import Accelerator
from mnist_diffusion.lab.training.loop import should_stop

accelerator = Accelerator()
verdicts = []
for out_of_time_rank in (1, 0):  # one rank's clock has used up the 1-minute budget, the other's has not
    seconds = 120.0 if accelerator.process_index == out_of_time_rank else 0.0
    verdicts.append(should_stop(accelerator, {"global_step": 1, "images_seen": 0, "train_seconds": seconds}, 10, 1.0))
report = {"num_processes": accelerator.num_processes, "distributed_type": str(accelerator.distributed_type),
          "verdicts": verdicts}
Path(sys.argv[1], f"rank{accelerator.process_index}.json").write_text(json.dumps(report))
accelerator.end_training()  # destroys the process group, as the training jobs do: without it a rank may abort at exit
"""


def test_two_processes_stop_together_when_the_main_rank_runs_out_of_time(tmp_path):
    probe = tmp_path / "stop_probe.py"
    probe.write_text(STOP_PROBE)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", "29518", str(probe), str(tmp_path)]
    result = subprocess.run(command, env=subprocess_env(ACCELERATE_USE_CPU="true"), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert report["num_processes"] == 2 and report["distributed_type"] == "DistributedType.MULTI_CPU"
        assert report["verdicts"] == [False, True], f"rank {rank}"  # rank 1's clock alone stops nobody


def test_training_length_counts_optimizer_steps_per_process():
    # 20 batches over 2 processes, 3 batches per step: ceil(10 / 3) = 4 steps an epoch.
    assert training_length(20, 2, 3, num_epochs=5) == TrainingLength(4, 20, 5)
    assert training_length(20, 2, 3, num_epochs=5, max_train_steps=10) == TrainingLength(4, 10, 3)


def test_the_option_groups_serve_another_script(capsys):
    # The distillation script's parser, say: the shared groups, a default of its own, and their checks.
    parser = argparse.ArgumentParser(prog="distill.py")
    add_optimizer_arguments(parser)
    add_ema_arguments(parser)
    add_checkpoint_arguments(parser)
    parser.set_defaults(learning_rate=1e-5)

    def check(args):
        return check_optimizer_arguments(args) + check_ema_arguments(args) + check_checkpoint_arguments(args)

    args = parse_checked(parser, check, ["--max_train_minutes", "5", "--resume_from_checkpoint", "latest"])
    assert args.learning_rate == 1e-5 and args.max_train_minutes == 5
    assert args.use_ema and args.checkpointing_steps == 500 and args.resume_from_checkpoint == "latest"
    with pytest.raises(SystemExit):
        parse_checked(parser, check, ["--seed=-1", "--ema_power", "0", "--save_model_steps", "0"])
    assert ("distill.py: error: --seed must be ≥ 0, got -1; --ema_power must be positive, got 0.0; "
            "--save_model_steps must be a positive integer, got 0") in capsys.readouterr().err


def test_checkpoints_hold_any_model_and_its_registered_objects(tmp_path):
    # Nothing in the checkpoint functions is the DDPM's: a linear model with an EMA of its own saves and resumes.
    accelerator = make_accelerator(tmp_path, mixed_precision=None)
    model = torch.nn.Linear(3, 2)
    ema = EMAModel(model.parameters(), decay=0.5)
    accelerator.register_for_checkpointing(ema)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    weights = model.weight.detach().clone()
    state = {**new_training_state(), "global_step": 3, "images_seen": 12, "train_seconds": 1.5}
    save_checkpoint(accelerator, tmp_path, state, limit=2)

    checkpoint = resolve_checkpoint("latest", tmp_path, num_registered=1)
    assert checkpoint == tmp_path / "checkpoints" / "checkpoint-3"
    assert checkpoint_problem(checkpoint, num_registered=2) == "custom_checkpoint_1.pkl is missing"
    with torch.no_grad():
        model.weight.zero_()
    ema.shadow_params[0].zero_()
    assert resume_state(accelerator, checkpoint, tmp_path) == state
    assert torch.equal(model.weight, weights) and torch.equal(ema.shadow_params[0], weights)
