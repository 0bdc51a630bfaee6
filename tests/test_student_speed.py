"""Tests of `benchmarks/student_speed.py`, the students' batch-1 speed against their teacher's stored default: which
settings it times, its ratios, its table, and that the committed result is the one the docs quote."""

import json
import sys
from pathlib import Path

import pytest
from diffusers import DPMSolverMultistepScheduler, LCMScheduler

from mnist_diffusion import MNISTDDPMPipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import student_speed  # noqa: E402

from .conftest import ROOT, documentation  # noqa: E402


def pipeline_with(pipe, scheduler_class, **config):
    """`pipe`'s UNet under another scheduler of the same noise schedule, with these stored defaults."""
    return MNISTDDPMPipeline(unet=pipe.unet, scheduler=scheduler_class.from_config(pipe.scheduler.config), **config)


def test_the_teacher_default_and_each_student_at_its_steps_and_one_are_timed(tmp_path, tiny_pipe):
    teacher = pipeline_with(tiny_pipe, DPMSolverMultistepScheduler, default_num_inference_steps=3,
                            default_guidance_scale=1.3)
    teacher.save_pretrained(tmp_path / "teacher")
    student = pipeline_with(tiny_pipe, LCMScheduler, default_num_inference_steps=2, default_guidance_scale=1.0)
    student.save_pretrained(tmp_path / "mnist-lcm")
    out = tmp_path / "speed.json"
    student_speed.main(["--teacher", str(tmp_path / "teacher"), "--students", str(tmp_path / "mnist-lcm"),
                        "--rounds", "2", "--calls", "1", "--output", str(out)])
    results = json.loads(out.read_text())
    assert list(results["seconds_per_call"]) == ["teacher: dpm 3 steps, guidance 1.3", "mnist-lcm: 1 step",
                                                 "mnist-lcm: 2 steps"]
    assert all(len(values) == 2 for values in results["seconds_per_call"].values())
    assert set(results["summary"]["speedup_vs_teacher"]) == {"mnist-lcm: 1 step", "mnist-lcm: 2 steps"}


def test_the_ratio_is_the_teachers_median_over_the_students():
    summary = student_speed.summarize({"teacher": [1.0, 3.0, 2.0], "student": [0.1, 0.2, 0.1]})
    assert summary["teacher"] == "teacher"
    assert summary["ms_per_digit"] == pytest.approx({"teacher": 2000.0, "student": 100.0})
    assert summary["speedup_vs_teacher"] == pytest.approx({"student": 20.0})
    table = student_speed.speed_table({"summary": summary}).splitlines()
    assert table[2:] == ["| teacher | 2000.0 |  |", "| student | 100.0 | 20.0× |"]


def test_bad_counts_and_folders_are_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        student_speed.main(["--teacher", str(tmp_path), "--students", str(tmp_path), "--rounds", "0"])
    err = capsys.readouterr().err
    assert f"{tmp_path} is not a pipeline folder (no model_index.json)" in err and "--rounds 0 must be" in err


def test_the_docs_quote_the_committed_speed_table():
    path = ROOT / "benchmarks" / "student_speed.json"
    if not path.is_file():
        pytest.skip("no committed student speed result yet")
    assert student_speed.speed_table(json.loads(path.read_text())) in documentation()
