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


@pytest.mark.parametrize("name", ["student_recipes.json", "student_levers.json"])
def test_the_docs_carry_the_committed_comparison(name):
    results = json.loads((ROOT / "benchmarks" / name).read_text())
    assert results["runs"][0]["name"] == results["baseline"]
    assert student_recipes.students_table(results) in documentation(), f"the table of {name} is out of date"
    if "levers" in results:
        assert results["levers"] == student_recipes.lever_decisions(results), "the decisions are not the rule's"
        assert student_recipes.levers_table(results) in documentation(), f"the levers of {name} are out of date"


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


def write_tcd(folder: Path, accuracies=(0.99, 0.997), floor=0.25) -> None:
    runs = [{"sampler": "tcd", "num_inference_steps": steps, "unet_dtype": "float32", "guidance_scale": 1.0,
             "guidance_interval": None, "accuracy": accuracy, "worst_digit": "3", "frechet_distance": 1.0,
             "frechet_ratio_to_real_floor": 4.0, "per_digit": {"3": {"accuracy": accuracy - 0.01}}}
            for steps, accuracy in zip((2, 4), accuracies)]
    (folder / "eval_tcd.json").write_text(json.dumps({"samples_per_digit": 500, "real_floor_frechet_distance": floor,
                                                      "runs": runs}))


def test_levers_are_kept_by_the_committed_rule_and_tcd_rows_are_read_beside(tmp_path):
    """Kept: a higher mean over 1, 2 and 4 steps with the 4-step accuracy at most 0.5 points lower."""
    base = write_student(tmp_path / "base", (0.10, 0.95, 0.980))
    better = write_student(tmp_path / "ict", (0.10, 0.97, 0.976), loss_type="ict")  # mean up, 4 steps −0.4
    worse_at_four = write_student(tmp_path / "td0", (0.50, 0.97, 0.970), target_decay=0.0)  # 4 steps −1.0
    lower = write_student(tmp_path / "curr", (0.10, 0.94, 0.985), num_ddim_timesteps_start=10)  # mean down
    write_tcd(better)
    results = student_recipes.collect({"base": base, "ict": better, "td0": worse_at_four, "curr": lower}, "base")
    assert [(lever["name"], lever["kept"]) for lever in results["levers"]] == [
        ("ict", True), ("td0", False), ("curr", False)]
    assert results["levers"][0]["four_step_change"] == pytest.approx(-0.004)
    ict = results["runs"][1]
    assert ict["evaluation_tcd"]["4"]["accuracy"] == 0.997 and "evaluation_tcd" not in results["runs"][0]
    table = student_recipes.levers_table(results).splitlines()
    assert table[2] == "| base | none (the baseline) | 67.67% |  |  |  |  |"
    assert table[3] == "| ict | `--loss_type ict` | 68.20% | -0.40 | 99.00% | 99.70% | **kept** |"


def test_a_tcd_evaluation_of_another_setting_is_refused(tmp_path):
    base = write_student(tmp_path / "base")
    write_tcd(base, floor=0.5)
    with pytest.raises(ValueError, match="eval_tcd.json has real_floor_frechet_distance 0.5"):
        student_recipes.collect({"base": base}, "base")


def candidate(name, one=(0.98, 0.95, 10.0), two=0.994, four=(0.996, 0.99), tcd=None, n=500, floor=0.25):
    evaluation = {"1": {"accuracy": one[0], "worst_digit_accuracy": one[1], "frechet_ratio_to_real_floor": one[2]},
                  "2": {"accuracy": two, "worst_digit_accuracy": two, "frechet_ratio_to_real_floor": 3.0},
                  "4": {"accuracy": four[0], "worst_digit_accuracy": four[1], "frechet_ratio_to_real_floor": 3.0}}
    row = {"name": name, "samples_per_digit": n, "real_floor_frechet_distance": floor, "evaluation": evaluation}
    if tcd is not None:
        row["evaluation_tcd"] = {str(steps): {"accuracy": accuracy, "worst_digit_accuracy": accuracy,
                                              "frechet_ratio_to_real_floor": 3.0} for steps, accuracy in tcd.items()}
    return row


TEACHER = {"samples_per_digit": 500, "real_floor_frechet_distance": 0.25, "default": {"row": 0},
           "rows": [{"frechet_ratio_to_real_floor": 4.0}]}  # one-step Fréchet target: ≤ 12×


def test_the_student_meeting_every_target_ships_alone_at_its_best_steps():
    choice = student_recipes.choose_students({"old": candidate("old", one=(0.26, 0.05, 1800.0)),
                                              "new": candidate("new")}, TEACHER)
    assert choice["targets_met"]["new"] == {"1 step": True, "2 steps": True, "4 steps": True}
    assert choice["targets_met"]["old"] == {"1 step": False, "2 steps": True, "4 steps": True}
    assert choice["mnist-lcm"] == {"name": "new", "num_inference_steps": 4, "sampler": "lcm"}
    assert choice["mnist-lcm-1step"] is None


def test_a_one_step_student_ships_beside_a_better_multi_step_one():
    """The multi-step student misses the one-step target; the other meets it: both ship. TCD is stored when it beats
    LCM by 0.2 points (here at 2 steps), and read for the targets at that count."""
    multi = candidate("multi", one=(0.26, 0.05, 1800.0), two=0.990, four=(0.994, 0.98), tcd={2: 0.996, 4: 0.995})
    one = candidate("one", one=(0.975, 0.945, 11.9), two=0.990, four=(0.985, 0.97))
    choice = student_recipes.choose_students({"multi": multi, "one": one}, TEACHER)
    assert choice["targets_met"]["multi"] == {"1 step": False, "2 steps": True, "4 steps": False}
    assert choice["mnist-lcm"] == {"name": "multi", "num_inference_steps": 2, "sampler": "tcd"}
    assert choice["mnist-lcm-1step"] == {"name": "one", "num_inference_steps": 1, "sampler": "lcm"}
    too_far = candidate("one", one=(0.975, 0.945, 12.1))  # Fréchet ratio above 3 × the teacher's 4.0
    assert not student_recipes.targets_met(too_far, 4.0)["1 step"]


def test_candidates_of_another_evaluation_than_the_teachers_are_refused():
    with pytest.raises(ValueError, match="candidate new was evaluated at 100 per digit"):
        student_recipes.choose_students({"new": candidate("new", n=100)}, TEACHER)


def test_a_candidate_names_a_row_of_a_committed_comparison(tmp_path, capsys):
    comparison = tmp_path / "students.json"
    comparison.write_text(json.dumps({"runs": [candidate("final")]}))
    teacher = tmp_path / "guidance.json"
    teacher.write_text(json.dumps(TEACHER))
    out = tmp_path / "choice.json"
    student_recipes.main(["--candidates", f"{comparison}:final", "--teacher_table", str(teacher), "--output", str(out)])
    assert json.loads(out.read_text())["mnist-lcm"]["name"] == "final"
    with pytest.raises(SystemExit):
        student_recipes.main(["--candidates", f"{comparison}:other", "--output", str(out)])
    assert f"{comparison} has no run 'other' (it has final)" in capsys.readouterr().err


def test_the_choice_is_stored_as_pretrained_folders(tmp_path, tiny_pipe):
    """A chosen run becomes the folder, with its steps and sampler, without its checkpoints or the old folder's
    evaluations; a chosen student without a run folder (the shipped one) keeps its weights and takes the steps."""
    from diffusers import LCMScheduler

    from mnist_diffusion import MNISTDDPMPipeline

    def student(folder):
        MNISTDDPMPipeline(unet=tiny_pipe.unet, scheduler=LCMScheduler.from_config(tiny_pipe.scheduler.config),
                          default_num_inference_steps=4).save_pretrained(folder)
        (folder / "training_config.json").write_text("{}")
        return folder

    run = student(tmp_path / "run")
    (run / "checkpoints").mkdir()
    pretrained = tmp_path / "pretrained"
    (student(pretrained / "mnist-lcm") / "evaluation").mkdir()
    student(pretrained / "mnist-lcm-1step")
    choice = {"mnist-lcm": {"name": "final", "num_inference_steps": 2, "sampler": "tcd"},
              "mnist-lcm-1step": {"name": "shipped", "num_inference_steps": 1, "sampler": "lcm"}}
    (tmp_path / "choice.json").write_text(json.dumps(choice))
    student_recipes.main(["--store", str(tmp_path / "choice.json"), "--runs", f"final={run}",
                          "--pretrained_dir", str(pretrained)])
    assert sorted(path.name for path in (pretrained / "mnist-lcm").iterdir()) == [
        "model_index.json", "scheduler", "training_config.json", "unet"]
    stored = MNISTDDPMPipeline.from_pretrained(pretrained / "mnist-lcm")
    assert type(stored.scheduler).__name__ == "TCDScheduler" and stored.config.default_num_inference_steps == 2
    kept = MNISTDDPMPipeline.from_pretrained(pretrained / "mnist-lcm-1step")
    assert type(kept.scheduler).__name__ == "LCMScheduler" and kept.config.default_num_inference_steps == 1
    assert not list(pretrained.glob("*.tmp")) and not list(pretrained.glob("*.old"))
