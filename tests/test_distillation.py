"""Tests of `mnist_diffusion/lab/training/distillation.py` on a tiny teacher and the generated MNIST of `mnist_diffusion/lab/synthetic_mnist.py`:
the method's pieces against diffusers' own schedulers, the loss, the boundary condition, the run (options, kill and
resume, the folder it writes)."""

import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, LCMScheduler

from mnist_diffusion import ClassConditionedUNet, MNISTDDPMPipeline, MNISTDDPMScheduler
from mnist_diffusion.scheduling_mnist_ddpm import PREDICTION_TYPES
from mnist_diffusion.lab.training import distillation
from mnist_diffusion.lab.training.distillation import (
    build_parser,
    consistency_function,
    consistency_loss,
    consistency_target,
    copy_of,
    ddim_step,
    distance,
    distill,
    load_teacher,
    main,
    parse_args,
    skipping_timesteps,
    student_scheduler,
    num_ddim_timesteps_at,
    teacher_prediction,
    update_target,
)

from .conftest import TINY_UNET
from .test_training import ROOT, checkpoint_names, kill_at_checkpoint, subprocess_env, unet_weights

TINY = ["--train_batch_size", "16", "--lr_warmup_steps", "2", "--logger", "none", "--validation_steps", "1000",
        "--num_ddim_timesteps", "10"]


def save_tiny_teacher(folder: Path, **scheduler_config) -> Path:
    """A tiny pipeline folder with a stored guidance of 1.4, standing in for the shipped teacher."""
    torch.manual_seed(0)
    MNISTDDPMPipeline(unet=ClassConditionedUNet(**TINY_UNET), scheduler=MNISTDDPMScheduler(**scheduler_config),
                      default_guidance_scale=1.4).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def tiny_v_teacher(tmp_path_factory) -> Path:
    """The same teacher as a v-prediction model (one trained with --prediction_type v_prediction)."""
    return save_tiny_teacher(tmp_path_factory.mktemp("v-teacher"), prediction_type="v_prediction")


def distill_args(teacher, data_dir, output_dir, *extra):
    return ["--teacher", str(teacher), "--data_dir", str(data_dir), "--output_dir", str(output_dir), *TINY, *extra]


def lcm_scheduler(**config) -> LCMScheduler:
    return LCMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", **config)


# ---------------------------------------------------------------------------------------------------------------------
# 1. The method's pieces, against diffusers


def test_the_skipping_schedule_is_the_one_lcm_scheduler_samples_from():
    schedule = skipping_timesteps(1000, 50)
    assert schedule[0] == 19 and schedule[-1] == 999 and len(schedule) == 50
    scheduler = lcm_scheduler(original_inference_steps=50)
    scheduler.set_timesteps(50)
    assert sorted(scheduler.timesteps.tolist()) == schedule.tolist()
    scheduler.set_timesteps(4)
    assert set(scheduler.timesteps.tolist()) <= set(schedule.tolist())


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("clip", [False, True])
def test_the_ddim_step_is_diffusers_ddim_step_for_each_image(clip, prediction_type):
    reference = DDIMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", timestep_spacing="trailing",
                              clip_sample=clip, prediction_type=prediction_type)
    reference.set_timesteps(50)  # 999, 979, ..., 19: each step jumps k = 20
    scheduler = lcm_scheduler(prediction_type=prediction_type)
    generator = torch.Generator().manual_seed(0)
    sample, output = torch.randn(3, 1, 28, 28, generator=generator) * 2, torch.randn(3, 1, 28, 28, generator=generator)
    timesteps = torch.tensor([999, 519, 39])
    ours = ddim_step(scheduler, output, sample, timesteps, timesteps - 20, clip)
    for i, t in enumerate(timesteps.tolist()):
        expected = reference.step(output[i : i + 1], t, sample[i : i + 1], eta=0.0,
                                   use_clipped_model_output=clip).prev_sample
        torch.testing.assert_close(ours[i : i + 1], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_the_consistency_function_is_what_lcm_scheduler_step_denoises_to(prediction_type):
    scheduler = lcm_scheduler(original_inference_steps=50, prediction_type=prediction_type)
    generator = torch.Generator().manual_seed(1)
    sample, output = torch.randn(2, 1, 28, 28, generator=generator), torch.randn(2, 1, 28, 28, generator=generator)
    scheduler.set_timesteps(50)
    for t in (999, 519, 19):
        scheduler._step_index = None  # step from t, wherever it is in the schedule
        denoised = scheduler.step(output, t, sample, generator=torch.Generator().manual_seed(0)).denoised
        ours = consistency_function(scheduler, output, sample, torch.full((2,), t))
        torch.testing.assert_close(ours, denoised, atol=1e-5, rtol=1e-5)


def test_a_prediction_type_distillation_cannot_read_is_refused_by_name():
    scheduler = lcm_scheduler()
    scheduler.register_to_config(prediction_type="flow")
    x = torch.zeros(1, 1, 28, 28)
    with pytest.raises(ValueError, match=f"'flow'.*expected one of {', '.join(map(repr, PREDICTION_TYPES))}"):
        consistency_function(scheduler, x, x, torch.tensor([19]))


def test_the_student_at_the_teachers_weights_meets_the_boundary_condition(tiny_unet):
    scheduler = lcm_scheduler()
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    zero = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        f = consistency_function(scheduler, tiny_unet(x, zero, torch.arange(4)).sample, x, zero)
    torch.testing.assert_close(f, x, atol=1e-6, rtol=0)  # f(x, 0) = x: c_skip(0) = 1, c_out(0) = 0
    c_skip, c_out = scheduler.get_scalings_for_boundary_condition_discrete(torch.tensor([19.0]))
    assert c_skip.item() < 1e-4 and c_out.item() > 0.999  # one skipping step up, f is the model's x̂_0


def test_batched_guidance_with_a_timestep_per_image_equals_one_call_per_image(tiny_pipe):
    latents = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    timesteps, labels = torch.tensor([999, 500, 19]), torch.tensor([1, 5, 9])
    with torch.no_grad():
        batched = tiny_pipe.predict_noise(latents, timesteps, labels, 1.4, torch.float32)
        single = [tiny_pipe.predict_noise(latents[i : i + 1], timesteps[i], labels[i : i + 1], 1.4, torch.float32)
                  for i in range(3)]
    torch.testing.assert_close(batched, torch.cat(single), atol=1e-5, rtol=1e-5)


def test_the_pseudo_huber_distance_is_zero_at_equality_and_near_the_absolute_error_far_away():
    a = torch.zeros(10)
    assert distance(a, a, "huber", 0.001).item() == 0
    assert abs(distance(a, torch.full((10,), 2.0), "huber", 0.001).item() - 2.0) < 1e-3
    assert distance(a, torch.full((10,), 2.0), "l2", 0.001).item() == 4.0


def test_update_target_moves_each_parameter_by_one_minus_decay():
    target, student = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = [p.detach().clone() for p in target.parameters()]
    update_target(target, student, 0.9)
    for new, old, online in zip(target.parameters(), before, student.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * online)


@pytest.mark.parametrize("student_type", ["epsilon", "v_prediction", "sample"])
def test_the_teacher_is_read_by_its_own_prediction_type_whatever_the_students(tiny_teacher, student_type):
    """The target is the teacher's DDIM step as diffusers' DDIMScheduler takes it (ε), then the target network's f,
    read as the student's type: with a target that outputs zeros, f(x_{t'}, t') is c_skip·x_{t'} (+ c_out·x̂_0 of a zero
    output, which is x_{t'}/√ᾱ for ε, √ᾱ·x_{t'} for v and 0 for x_0)."""
    teacher = load_teacher(tiny_teacher)
    scheduler = student_scheduler(teacher, 50, 10.0, student_type)
    assert scheduler.config.prediction_type == student_type and teacher.scheduler.config.prediction_type == "epsilon"

    class Zeros(torch.nn.Module):
        def forward(self, sample, timestep, labels):
            return type("Output", (), {"sample": torch.zeros_like(sample)})

    noisy = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(6))
    labels, timesteps = torch.tensor([3, 7]), torch.tensor([999, 519])
    with torch.no_grad():
        ours = consistency_target(Zeros(), teacher, scheduler, noisy, timesteps, timesteps - 20, labels, 1.4)
        output = teacher.predict_noise(noisy, timesteps, labels, 1.4, torch.float32)
    clip = teacher.scheduler.config.clip_sample
    reference = DDIMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", timestep_spacing="trailing",
                              clip_sample=clip, prediction_type="epsilon")
    reference.set_timesteps(50)
    for i, t in enumerate(timesteps.tolist()):
        next_sample = reference.step(output[i : i + 1], t, noisy[i : i + 1], eta=0.0,
                                     use_clipped_model_output=clip).prev_sample
        expected = consistency_function(scheduler, torch.zeros_like(next_sample), next_sample, torch.tensor([t - 20]))
        torch.testing.assert_close(ours[i : i + 1], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("teacher_fixture, student_type", [
    ("tiny_teacher", None), ("tiny_v_teacher", None), ("tiny_teacher", "v_prediction"), ("tiny_teacher", "sample"),
])
def test_the_loss_is_finite_and_falls_on_a_fixed_batch(request, teacher_fixture, student_type):
    teacher = load_teacher(request.getfixturevalue(teacher_fixture))
    scheduler = student_scheduler(teacher, 10, 10.0, student_type)
    # The student reads as it is told, or else as it was taught.
    assert scheduler.config.prediction_type == (student_type or teacher.scheduler.config.prediction_type)
    student, target = copy_of(teacher.unet).train(), copy_of(teacher.unet).requires_grad_(False)
    images = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(4)) * 2 - 1
    labels = torch.arange(8)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)

    def loss_at_fixed_noise():
        torch.manual_seed(5)  # the same timesteps and noise every time
        return consistency_loss(student, target, teacher, scheduler, images, labels, 1.4, 10)

    first = loss_at_fixed_noise()
    assert torch.isfinite(first) and first.item() > 0
    for _ in range(50):  # an x_0 student starting from ε weights needs 50 to halve it (15 do for ε and v)
        optimizer.zero_grad()
        loss_at_fixed_noise().backward()
        optimizer.step()
    assert loss_at_fixed_noise().item() < 0.5 * first.item()


def test_regressing_on_the_teacher_is_zero_for_its_own_copy_and_teaches_another_parametrisation(tmp_path,
                                                                                               tiny_teacher):
    images = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(4)) * 2 - 1
    labels = torch.arange(8)

    def loss(student, teacher, scheduler):
        torch.manual_seed(5)
        return consistency_loss(student, None, teacher, scheduler, images, labels, 1.0, 10, regress_on_teacher=True)

    # An ε student with the weights of a teacher that does not clamp x̂_0 already is the unguided teacher.
    unclamped = load_teacher(save_tiny_teacher(tmp_path / "teacher", clip_sample=False))
    assert loss(copy_of(unclamped.unet), unclamped, student_scheduler(unclamped, 10, 10.0)).item() < 1e-6
    # A v student learns the (clamping) teacher's x̂_0 in its own parametrisation.
    teacher = load_teacher(tiny_teacher)
    v_scheduler, student = student_scheduler(teacher, 10, 10.0, "v_prediction"), copy_of(teacher.unet).train()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    first = loss(student, teacher, v_scheduler)
    for _ in range(40):
        optimizer.zero_grad()
        loss(student, teacher, v_scheduler).backward()
        optimizer.step()
    assert loss(student, teacher, v_scheduler).item() < 0.5 * first.item()


# ---------------------------------------------------------------------------------------------------------------------
# 2. The run


def test_a_short_run_writes_a_student_that_loads_with_lcm_scheduler(tmp_path, tiny_teacher, synthetic_mnist):
    out = tmp_path / "student"
    distill(parse_args(distill_args(tiny_teacher, synthetic_mnist, out, "--max_train_steps", "4",
                                    "--checkpointing_steps", "2", "--validation_steps", "4",
                                    "--validation_images_per_digit", "1")))
    assert checkpoint_names(out) == ["checkpoint-2", "checkpoint-4"]
    assert (out / "samples" / "step-000004.png").is_file()
    index = json.loads((out / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "LCMScheduler"]
    assert index["default_guidance_scale"] == 1.0 and index["default_num_inference_steps"] == 4
    scheduler_config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler_config["original_inference_steps"] == 10 and "variance_type" not in scheduler_config
    record = json.loads((out / "training_config.json").read_text())
    assert record["global_step"] == 4 and record["images_seen"] == 4 * 16 and record["train_minutes"] > 0
    assert record["distilled_from"]["guidance_scale"] == 1.4  # the teacher's stored default
    assert index["distilled_guidance_scale"] == 1.4  # so that a call refuses to guide a second time
    assert record["data"] == {"data_set": f"the data set declared in {synthetic_mnist.name}/checksums.json",
                              "num_train_images": 320}
    assert record["command"].startswith("scripts/distill.py")

    pipe = MNISTDDPMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, LCMScheduler)
    calls = []
    pipe.unet.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    images = pipe(labels=[3, 7], output_type="pt").images
    assert images.shape == (2, 1, 28, 28) and torch.isfinite(images).all()
    assert calls == [2] * 4  # the default 4 steps, one conditional pass each: no unconditional half
    with pytest.raises(ValueError, match="at most 10"):
        pipe(labels=[3], num_inference_steps=11)


@pytest.mark.parametrize("student_type", ["v_prediction", "sample"])
def test_a_students_own_prediction_type_round_trips_and_diffusers_samples_it_as_trained(tmp_path, tiny_teacher,
                                                                                         synthetic_mnist, student_type):
    out = tmp_path / "student"
    distill(parse_args(distill_args(tiny_teacher, synthetic_mnist, out, "--max_train_steps", "2",
                                    "--checkpointing_steps", "2", "--student_prediction_type", student_type,
                                    "--teacher_regression_steps", "1")))
    assert json.loads((out / "training_config.json").read_text())["distilled_from"]["student_prediction_type"] == (
        student_type)
    pipe = MNISTDDPMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, LCMScheduler) and pipe.scheduler.config.prediction_type == student_type
    # One step from pure noise: the image is diffusers' LCMScheduler.step().denoised, which is training's f(x_T, T).
    calls, step = [], pipe.scheduler.step

    def recorded_step(model_output, timestep, sample, **kwargs):
        calls.append((model_output, timestep, sample, step(model_output, timestep, sample, **kwargs)))
        return calls[-1][-1]

    pipe.scheduler.step = recorded_step
    image = pipe(labels=[3], num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="pt").images
    [(output, timestep, latents, result)] = calls
    assert int(timestep) == 999
    with torch.no_grad():
        torch.testing.assert_close(output, pipe.unet(latents, torch.tensor([999]), torch.tensor([3])).sample)
    f = consistency_function(student_scheduler(load_teacher(tiny_teacher), 10, 10.0, student_type), output, latents,
                             torch.tensor([999]))
    torch.testing.assert_close(result.denoised, f, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(image, (f / 2 + 0.5).clamp(0, 1), atol=1e-5, rtol=1e-5)


def test_a_v_prediction_teachers_student_samples_as_v_prediction(tmp_path, tiny_v_teacher, synthetic_mnist):
    out = tmp_path / "student"
    distill(parse_args(distill_args(tiny_v_teacher, synthetic_mnist, out, "--max_train_steps", "2",
                                    "--checkpointing_steps", "2")))
    pipe = MNISTDDPMPipeline.from_pretrained(out)
    assert isinstance(pipe.scheduler, LCMScheduler) and pipe.scheduler.config.prediction_type == "v_prediction"
    pipe.set_progress_bar_config(disable=True)
    assert torch.isfinite(pipe(labels=[3], output_type="pt").images).all()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num_ddim_timesteps", "0"], "--num_ddim_timesteps must be a positive integer"),
        (["--target_decay", "1"], "--target_decay must be in \\[0, 1\\)"),
        (["--teacher_regression_steps", "-1"], "--teacher_regression_steps must be ≥ 0"),
        (["--huber_c", "0"], "--huber_c must be positive"),
        (["--guidance_scale", "nan"], "--guidance_scale must be a finite number"),
        (["--guidance_scale", "-1"], "--guidance_scale must be a finite number"),
        (["--default_num_inference_steps", "11"], "must be at most --num_ddim_timesteps 10"),
        (["--validation_inference_steps", "20"], "--validation_inference_steps 20 must be at most"),
        (["--learning_rate", "0"], "--learning_rate must be positive"),
        (["--checkpointing_steps", "0"], "--checkpointing_steps must be a positive integer"),
        (["--gap_doubling_steps", "5"], "--gap_doubling_steps 5 needs --num_ddim_timesteps_start"),
        (["--num_ddim_timesteps_start", "5"], "needs --gap_doubling_steps, a positive integer, got None"),
        (["--num_ddim_timesteps_start", "5", "--gap_doubling_steps", "0"], "a positive integer, got 0"),
        (["--num_ddim_timesteps_start", "10", "--gap_doubling_steps", "4"],
         "--num_ddim_timesteps_start 10 must be below --num_ddim_timesteps 10"),
        (["--num_ddim_timesteps_start", "0", "--gap_doubling_steps", "4"],
         "--num_ddim_timesteps_start must be a positive integer"),
    ],
)
def test_nonsense_options_fail_before_distilling(tmp_path, tiny_teacher, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(distill_args(tiny_teacher, tmp_path, tmp_path / "out", *extra))
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def distill_refused(capsys, argv: list[str]) -> str:
    """Parse `scripts/distill.py` options that must be refused as a usage error (exit status 2); the message."""
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_the_teachers_folder_is_refused_as_output_and_a_missing_teacher_is_named(tmp_path, tiny_teacher, capsys,
                                                                                 synthetic_mnist):
    assert "is the teacher's folder" in distill_refused(capsys, distill_args(tiny_teacher, synthetic_mnist,
                                                                             tiny_teacher))
    error = distill_refused(capsys, distill_args(tmp_path / "no-such-teacher", synthetic_mnist, tmp_path / "out"))
    assert "no-such-teacher: no such folder" in error
    (tmp_path / "empty").mkdir()
    error = distill_refused(capsys, distill_args(tmp_path / "empty", synthetic_mnist, tmp_path / "out"))
    assert "empty is not a pipeline folder: it has no model_index.json" in error
    assert not (tmp_path / "out").exists()  # nothing is created for a run that cannot start


def test_an_output_folder_holding_other_files_is_a_usage_error(tmp_path, tiny_teacher, capsys, synthetic_mnist):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("precious")
    error = distill_refused(capsys, distill_args(tiny_teacher, synthetic_mnist, tmp_path / "out"))
    assert "already holds files a run did not write (thesis.tex)" in error
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["thesis.tex"]


def test_a_teacher_with_a_guidance_interval_is_refused_with_what_to_do(tmp_path, tiny_teacher, synthetic_mnist,
                                                                       capsys):
    teacher = tmp_path / "interval-teacher"
    shutil.copytree(tiny_teacher, teacher)
    index = json.loads((teacher / "model_index.json").read_text())
    (teacher / "model_index.json").write_text(json.dumps({**index, "default_guidance_interval": [82, 579]}))
    error = distill_refused(capsys, distill_args(teacher, synthetic_mnist, tmp_path / "out"))
    assert "guides only the timesteps 82 ≤ t ≤ 579 by default" in error and "pass --guide_every_step" in error
    assert parse_args(distill_args(teacher, synthetic_mnist, tmp_path / "out", "--guide_every_step")).guide_every_step


def test_a_skipping_schedule_longer_than_the_teachers_is_a_usage_error(tmp_path, tiny_teacher, synthetic_mnist,
                                                                       capsys):
    error = distill_refused(capsys, distill_args(tiny_teacher, synthetic_mnist, tmp_path / "out",
                                                 "--num_ddim_timesteps", "1001"))
    assert "--num_ddim_timesteps 1001 must be at most the teacher's num_train_timesteps 1000" in error
    assert parse_args(distill_args(tiny_teacher, synthetic_mnist, tmp_path / "out", "--num_ddim_timesteps", "1000"))


def test_a_distilled_student_is_refused_as_a_teacher_by_name(tmp_path, tiny_teacher, synthetic_mnist, capsys):
    teacher = MNISTDDPMPipeline.from_pretrained(tiny_teacher)
    MNISTDDPMPipeline(unet=teacher.unet, scheduler=lcm_scheduler(original_inference_steps=10),
                      default_num_inference_steps=4, distilled_guidance_scale=1.4).save_pretrained(tmp_path / "student")
    error = distill_refused(capsys, distill_args(tmp_path / "student", synthetic_mnist, tmp_path / "out"))
    assert "samples with LCMScheduler, not MNISTDDPMScheduler: it is not a DDPM" in error


def refused_before_loading(monkeypatch, capsys, argv: list[str]) -> str:
    """Run `scripts/distill.py`'s main with options it must refuse as a usage error (exit status 2) before the teacher
    (and so the student, its copy) is loaded; the message."""

    def load_teacher(teacher_dir):
        raise AssertionError(f"the teacher {teacher_dir} was loaded")

    monkeypatch.setattr(distillation, "load_teacher", load_teacher)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("regression_steps", [5, 3])
def test_regression_steps_that_leave_no_consistency_step_are_a_usage_error(tmp_path, tiny_teacher, synthetic_mnist,
                                                                           monkeypatch, capsys, regression_steps):
    out = tmp_path / "student"
    argv = distill_args(tiny_teacher, synthetic_mnist, out, "--teacher_regression_steps", str(regression_steps),
                        "--max_train_steps", "3")
    error = refused_before_loading(monkeypatch, capsys, argv)
    assert (f"--teacher_regression_steps {regression_steps} must be fewer than --max_train_steps 3: the run would end "
            "before its first consistency step") in error
    assert not out.exists()
    args = parse_args(distill_args(tiny_teacher, synthetic_mnist, out, "--teacher_regression_steps", "2",
                                   "--max_train_steps", "3"))  # one consistency step
    assert (args.teacher_regression_steps, args.max_train_steps) == (2, 3)


@pytest.fixture(scope="module")
def distilled_run(tmp_path_factory, tiny_teacher, synthetic_mnist) -> Path:
    """A finished run of 2 steps with the tiny teacher (an ε student, no regression steps, N = 10), checkpoint-2."""
    out = tmp_path_factory.mktemp("distilled") / "student"
    distill(parse_args(distill_args(tiny_teacher, synthetic_mnist, out, "--max_train_steps", "2",
                                    "--checkpointing_steps", "2")))
    return out


@pytest.mark.parametrize("changed, difference", [
    (["--student_prediction_type", "sample"], "student_prediction_type: 'epsilon' there, 'sample' now"),
    (["--teacher_regression_steps", "1"], "teacher_regression_steps: 0 there, 1 now"),
    (["--num_ddim_timesteps", "20"], "num_ddim_timesteps: 10 there, 20 now"),
])
@pytest.mark.parametrize("resume", ["latest", "path"])
def test_a_resume_that_changes_what_the_student_learns_is_a_usage_error_before_loading(distilled_run, tiny_teacher,
                                                                                      synthetic_mnist, monkeypatch,
                                                                                      capsys, changed, difference,
                                                                                      resume):
    checkpoint = distilled_run / "checkpoints" / "checkpoint-2"
    before = {p: p.read_bytes() for p in sorted(distilled_run.rglob("*")) if p.is_file()}
    common = ["--max_train_steps", "4", "--resume_from_checkpoint", "latest" if resume == "latest" else str(checkpoint)]
    error = refused_before_loading(monkeypatch, capsys, distill_args(tiny_teacher, synthetic_mnist, distilled_run,
                                                                     *common, *changed))
    assert f"--resume_from_checkpoint {checkpoint} was written by a run with other options ({difference})" in error
    assert {p: p.read_bytes() for p in sorted(distilled_run.rglob("*")) if p.is_file()} == before
    # The same options pass, the student's prediction type given or the teacher's by default.
    for same in ([], ["--student_prediction_type", "epsilon"]):
        assert parse_args(distill_args(tiny_teacher, synthetic_mnist, distilled_run, *common, *same))


def test_help_names_the_sampler_that_draws_the_validation_grids():
    text = " ".join(build_parser().format_help().split())
    assert "Steps of the student's LCMScheduler for validation samples" in text and "DPM-Solver++" not in text


def test_a_resume_with_another_teacher_guidance_schedule_or_loss_is_refused_naming_each(tmp_path, tiny_teacher,
                                                                                        tiny_v_teacher,
                                                                                        synthetic_mnist):
    out = tmp_path / "student"
    common = ["--max_train_steps", "4", "--checkpointing_steps", "2"]
    distill(parse_args(distill_args(tiny_teacher, synthetic_mnist, out, *common, "--max_train_steps", "2")))
    before = {p: p.read_bytes() for p in sorted((out / "checkpoints").rglob("*")) if p.is_file()}
    changed = ["--guidance_scale", "3", "--num_ddim_timesteps", "20", "--loss_type", "l2",
               "--student_prediction_type", "sample", "--teacher_regression_steps", "1"]
    with pytest.raises(ValueError) as error:  # options built in code: distill() itself refuses, teacher loaded
        distill(build_parser().parse_args(distill_args(tiny_v_teacher, synthetic_mnist, out, *common, *changed,
                                                       "--resume_from_checkpoint", "latest")))
    message = str(error.value)
    assert "was written by a run with other options" in message
    for difference in ("teacher_sha256: '", "guidance_scale: 1.4 there, 3.0 now", "num_ddim_timesteps: 10 there, 20 now",
                       "loss_type: 'huber' there, 'l2' now", "student_prediction_type: 'epsilon' there, 'sample' now",
                       "teacher_regression_steps: 0 there, 1 now"):
        assert difference in message
    assert {p: p.read_bytes() for p in sorted((out / "checkpoints").rglob("*")) if p.is_file()} == before
    # The same options resume.
    distill(parse_args(distill_args(tiny_teacher, synthetic_mnist, out, *common, "--resume_from_checkpoint", "latest")))
    assert checkpoint_names(out) == ["checkpoint-2", "checkpoint-4"]


@pytest.mark.parametrize("student", [[], ["--student_prediction_type", "v_prediction"]], ids=["as-taught", "v"])
def test_a_killed_distillation_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path, tiny_teacher,
                                                                                   synthetic_mnist, student):
    # 24 steps of 16 images cross an epoch of the 320 generated ones: resuming at 16 skips into the second epoch.
    common = ["--max_train_steps", "24", "--checkpointing_steps", "8", *student]
    script = [sys.executable, str(ROOT / "scripts" / "distill.py")]
    env = subprocess_env()
    subprocess.run([*script, *distill_args(tiny_teacher, synthetic_mnist, tmp_path / "straight", *common)], env=env,
                   check=True, capture_output=True)

    interrupted = tmp_path / "interrupted"
    kill_at_checkpoint([*script, *distill_args(tiny_teacher, synthetic_mnist, interrupted, *common)], interrupted, 16,
                       env)

    resumed = subprocess.run(
        [*script, *distill_args(tiny_teacher, synthetic_mnist, interrupted, *common, "--resume_from_checkpoint",
                                "latest")],
        env=env, check=True, capture_output=True, text=True,
    )
    assert "Resumed from" in resumed.stdout + resumed.stderr
    straight, again = unet_weights(tmp_path / "straight"), unet_weights(interrupted)  # EMA weights
    assert straight.keys() == again.keys()
    for name in straight:
        torch.testing.assert_close(again[name], straight[name], atol=1e-6, rtol=0, msg=name)
    # The target network is restored too: the final checkpoints hold the same one.
    targets = [torch.load(run / "checkpoints" / "checkpoint-24" / "custom_checkpoint_0.pkl", weights_only=False)
               for run in (tmp_path / "straight", interrupted)]
    for name in targets[0]:
        torch.testing.assert_close(targets[1][name], targets[0][name], atol=1e-6, rtol=0, msg=name)


# ---------------------------------------------------------------------------------------------------------------------
# The levers of the student recipes: iCT's loss, the step-gap curriculum, the teacher's guider and guidance UNet

def test_icts_pseudo_huber_is_on_each_images_l2_distance_with_c_from_its_dimension():
    prediction, target = torch.zeros(2, 1, 28, 28), torch.zeros(2, 1, 28, 28)
    target[0, 0, 0, :4] = 0.5  # ‖a − b‖ = 1 for the first image, 0 for the second
    c = 0.00054 * 28
    assert distance(prediction, target, "ict", huber_c=123.0).item() == pytest.approx(((1 + c**2) ** 0.5 - c) / 2)
    assert distance(prediction, prediction, "ict", 0.001).item() == 0
    # Per pixel, the same error is spread over 784 pixels: a much smaller loss.
    assert distance(prediction, target, "huber", 0.001).item() < distance(prediction, target, "ict", 0.001).item() / 50


def test_the_step_gap_curriculum_doubles_n_up_to_the_final_schedule():
    assert [num_ddim_timesteps_at(step, 40, 10, 5) for step in (0, 4, 5, 9, 10, 14, 15, 1000)] == \
        [10, 10, 20, 20, 40, 40, 40, 40]
    assert num_ddim_timesteps_at(7, 50) == 50
    assert [num_ddim_timesteps_at(step, 50, 10, 100) for step in (99, 100, 200, 300)] == [10, 20, 40, 50]


def test_the_teachers_target_goes_through_its_guidance_unet_and_its_guider(tmp_path, tiny_teacher):
    from diffusers.guiders import AdaptiveProjectedGuidance

    teacher = load_teacher(tiny_teacher)
    noisy, timesteps, labels = torch.randn(3, 1, 28, 28), torch.tensor([19, 499, 999]), torch.tensor([1, 2, 3])
    plain = teacher_prediction(teacher, noisy, timesteps, labels, 2.0)
    torch.testing.assert_close(plain, teacher.predict_noise(noisy, timesteps, labels, 2.0, torch.float32))
    torch.manual_seed(5)
    teacher.guidance_unet = ClassConditionedUNet(**TINY_UNET).eval()
    guided = teacher_prediction(teacher, noisy, timesteps, labels, 2.0)
    conditional = teacher.unet(noisy, timesteps, labels).sample
    weak = teacher.guidance_unet(noisy, timesteps, labels).sample
    torch.testing.assert_close(guided, weak + 2.0 * (conditional - weak), atol=1e-5, rtol=0)
    teacher.guider = AdaptiveProjectedGuidance(guidance_scale=2.0, eta=0.0)
    assert (teacher_prediction(teacher, noisy, timesteps, labels, 2.0) - guided).abs().max() > 1e-4


def test_a_teacher_whose_guider_depends_on_the_step_is_refused(tmp_path, tiny_teacher, synthetic_mnist, capsys):
    from diffusers.guiders import AdaptiveProjectedGuidance

    teacher = MNISTDDPMPipeline.from_pretrained(tiny_teacher)
    teacher.guider = AdaptiveProjectedGuidance(guidance_scale=2.0, adaptive_projected_guidance_momentum=-0.5)
    teacher.save_pretrained(tmp_path / "apg-teacher")
    error = distill_refused(capsys, distill_args(tmp_path / "apg-teacher", synthetic_mnist, tmp_path / "out"))
    assert "guides with AdaptiveProjectedGuidance" in error and "momentum" in error


def test_a_run_with_every_lever_records_them_and_its_autoguided_teacher(tmp_path, tiny_teacher, synthetic_mnist,
                                                                        monkeypatch):
    teacher = MNISTDDPMPipeline.from_pretrained(tiny_teacher)
    torch.manual_seed(5)
    teacher.guidance_unet = ClassConditionedUNet(**TINY_UNET)
    teacher.save_pretrained(tmp_path / "ag-teacher")
    out = tmp_path / "student"
    seen = []
    original = distillation.consistency_loss

    def spy(*args, **kwargs):
        seen.append(args[7])  # num_ddim_timesteps
        return original(*args, **kwargs)

    monkeypatch.setattr(distillation, "consistency_loss", spy)
    distill(parse_args(distill_args(tmp_path / "ag-teacher", synthetic_mnist, out, "--max_train_steps", "5",
                                    "--num_ddim_timesteps_start", "5", "--gap_doubling_steps", "3",
                                    "--loss_type", "ict", "--target_decay", "0")))
    assert seen == [5, 5, 5, 10, 10]
    distilled = json.loads((out / "training_config.json").read_text())["distilled_from"]
    assert distilled["loss_type"] == "ict" and distilled["target_decay"] == 0
    assert distilled["num_ddim_timesteps_start"] == 5 and distilled["gap_doubling_steps"] == 3
    assert distilled["teacher_guidance_unet"].endswith("ClassConditionedUNet") and distilled["teacher_guider"] is None
    scheduler_config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler_config["original_inference_steps"] == 10


def test_a_teacher_that_stores_a_fast_solver_is_the_same_ddpm_to_distil_from(tmp_path, tiny_teacher):
    from diffusers import DPMSolverMultistepScheduler

    teacher = MNISTDDPMPipeline.from_pretrained(tiny_teacher)
    teacher.scheduler = DPMSolverMultistepScheduler.from_config(teacher.scheduler.config,
                                                                algorithm_type="sde-dpmsolver++")
    teacher.save_pretrained(tmp_path / "fast-teacher")
    assert distillation.teacher_problems(parse_args(distill_args(tmp_path / "fast-teacher", tmp_path, tmp_path / "o"))) == []
    loaded = load_teacher(tmp_path / "fast-teacher")
    assert isinstance(loaded.scheduler, MNISTDDPMScheduler)
    own = load_teacher(tiny_teacher).scheduler
    keys = [name for name in inspect.signature(MNISTDDPMScheduler.__init__).parameters if name not in ("self", "kwargs")]
    assert {key: loaded.scheduler.config[key] for key in keys} == {key: own.config[key] for key in keys}
    torch.testing.assert_close(loaded.scheduler.alphas_cumprod, own.alphas_cumprod, atol=0, rtol=0)
