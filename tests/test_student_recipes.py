"""Tests of `benchmarks/student_recipes.py`, the one-step student's recipe comparison: what a run changed is read from
its recorded `scripts/distill.py` options, the table is rendered from the results, and the docs carry the committed
table."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import student_recipes  # noqa: E402

from .conftest import ROOT, documentation  # noqa: E402


def write_student(folder: Path, accuracies=(0.3, 0.98, 0.99), **args) -> Path:
    folder.mkdir(parents=True)
    record = {"command": f"scripts/distill.py --output_dir {folder}",
              "args": {"output_dir": str(folder), "student_prediction_type": "epsilon", "guidance_scale": None,
                       "max_train_steps": 500, **args},
              "global_step": 500, "images_seen": 64_000, "train_minutes": 20.0}
    (folder / "training_config.json").write_text(json.dumps(record))
    runs = [{"sampler": "lcm", "num_inference_steps": steps, "unet_dtype": "float32", "guidance_scale": 1.0,
             "guidance_interval": None, "accuracy": accuracy, "worst_digit": "5", "frechet_distance": 1 / accuracy,
             "frechet_ratio_to_real_floor": 4 / accuracy, "per_digit": {"5": {"accuracy": accuracy - 0.05}}}
            for steps, accuracy in zip((1, 2, 4), accuracies)]
    (folder / "eval.json").write_text(json.dumps({"samples_per_digit": 500, "real_floor_frechet_distance": 0.25,
                                                  "runs": runs}))
    return folder


def test_the_change_is_read_from_the_recorded_distillation_options(tmp_path):
    eps = write_student(tmp_path / "eps")
    v = write_student(tmp_path / "v", (0.9, 0.99, 0.995), student_prediction_type="v_prediction")
    guided = write_student(tmp_path / "w2", guidance_scale=2.0, max_train_steps=900)  # steps are not the recipe
    results = student_recipes.collect({"eps": eps, "v": v, "w2": guided}, "eps")
    assert [run["change"] for run in results["runs"]] == [
        "none (the current recipe)", "`--student_prediction_type v_prediction`", "`--guidance_scale 2.0`"]
    assert results["runs"][1]["evaluation"]["1"]["worst_digit_accuracy"] == pytest.approx(0.85)
    table = student_recipes.students_table(results).splitlines()
    assert table[3] == ("| v | `--student_prediction_type v_prediction` | 500 | 20.0 | 90.00% | 5 (85.0%) | 4.4× | "
                        "99.00% | 4.04× | 99.50% | 5 (94.5%) | 4.02× |")


def test_a_run_without_an_evaluation_at_each_step_count_is_refused(tmp_path):
    eps = write_student(tmp_path / "eps")
    results = json.loads((eps / "eval.json").read_text())
    results["runs"] = results["runs"][:2]
    (eps / "eval.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match="has no float32 lcm result at 4 steps"):
        student_recipes.collect({"eps": eps}, "eps")


def test_a_missing_evaluation_is_a_usage_error_naming_the_distillation_script(tmp_path, capsys):
    eps = write_student(tmp_path / "eps")
    with pytest.raises(SystemExit):
        student_recipes.main(["--runs", f"eps={eps}", f"x={tmp_path / 'nowhere'}", "--baseline", "eps",
                              "--output", str(tmp_path / "out.json")])
    assert f"--runs x: {tmp_path / 'nowhere'} is not a folder (expected a run of scripts/distill.py)" in (
        capsys.readouterr().err)


def test_the_docs_carry_the_committed_comparison():
    results = json.loads((ROOT / "benchmarks" / "student_recipes.json").read_text())
    assert results["runs"][0]["name"] == results["baseline"]
    assert student_recipes.students_table(results) in documentation(), "the table is out of date"


def test_the_docs_carry_the_one_step_students_measured_rows():
    """The re-distilled student (`benchmarks/final_student/`): its rows in the docs are the committed JSON's."""
    from mnist_diffusion.lab.reporting import evaluation_rows

    folder = ROOT / "benchmarks" / "final_student"
    record = json.loads((folder / "training_config.json").read_text())
    assert record["distilled_from"]["student_prediction_type"] == "v_prediction"
    docs = documentation()
    for name, n, steps in (("evaluation.json", 5_000, [1, 2, 4, 8]), ("bf16.json", 1_000, [1, 2, 4] * 2)):
        results = json.loads((folder / name).read_text())
        assert results["num_samples"] == n and [run["num_inference_steps"] for run in results["runs"]] == steps
        for row in evaluation_rows(results):
            assert row in docs, f"the docs lack the one-step student's measured row {row}"
