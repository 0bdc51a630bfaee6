"""Tests of `benchmarks/recipes.py`, the quality-per-CPU-minute comparison: what a run changed is read from its
recorded options, the table is rendered from the results file, and the docs carry the committed table."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import recipes  # noqa: E402

from .conftest import ROOT, documentation  # noqa: E402


def write_run(folder: Path, command: str, minutes: float = 25.0, **args) -> Path:
    folder.mkdir(parents=True)
    record = {"command": command, "args": {"output_dir": str(folder), "learning_rate": 1e-3, "snr_gamma": None,
                                           "block_out_channels": [32, 64, 96], **args},
              "global_step": 100, "images_seen": 12_800, "train_minutes": minutes, "num_parameters": 1_000}
    (folder / "training_config.json").write_text(json.dumps(record))

    def result(scale, accuracy, ratio):
        return {"sampler": "dpm", "num_inference_steps": 20, "unet_dtype": "bfloat16", "guidance_scale": scale,
                "guidance_interval": None, "accuracy": accuracy, "worst_digit": "9", "frechet_distance": ratio / 4,
                "frechet_ratio_to_real_floor": ratio, "per_digit": {"9": {"accuracy": accuracy - 0.01}}}

    (folder / "eval.json").write_text(json.dumps({
        "samples_per_digit": 200, "real_floor_frechet_distance": 0.25,
        "runs": [result(1.0, 0.93, 4.0), result(1.5, 0.99, 2.0)],
    }))
    return folder


def test_the_change_is_read_from_the_recorded_options(tmp_path):
    base = write_run(tmp_path / "base", "scripts/train.py --output_dir base")
    snr = write_run(tmp_path / "snr", "scripts/train.py --snr_gamma 5", snr_gamma=5.0)
    wide = write_run(tmp_path / "wide", "scripts/train.py", block_out_channels=[32, 64, 128], learning_rate=2e-3)
    peer = write_run(tmp_path / "peer", "benchmarks/train_peer.py --output_dir peer", channels_last=False)
    results = recipes.collect({"current": base, "snr": snr, "wide": wide, "peer": peer}, "current")
    assert [run["change"] for run in results["runs"]] == [
        "none (the current recipe)", "`--snr_gamma 5.0`", "`--learning_rate 0.002`, `--block_out_channels 32 64 128`",
        "`benchmarks/train_peer.py`"]
    run = results["runs"][1]
    assert run["images_per_second"] == pytest.approx(12_800 / 1500)
    assert run["evaluation"]["1"]["accuracy"] == 0.93 and run["evaluation"]["1.5"]["worst_digit_accuracy"] == 0.98
    table = recipes.recipes_table(results).splitlines()
    assert table[3] == "| snr | `--snr_gamma 5.0` | 100 | 9 | 93.00% | 4.00× | 99.00% | 9 (98.0%) | 2.00× |"


def test_a_run_without_both_guidance_scales_or_an_unknown_baseline_is_refused(tmp_path):
    base = write_run(tmp_path / "base", "scripts/train.py")
    with pytest.raises(ValueError, match="--baseline 'other' is not one of the runs"):
        recipes.collect({"current": base}, "other")
    results = json.loads((base / "eval.json").read_text())
    results["runs"] = results["runs"][:1]
    (base / "eval.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match=r"eval.json has no result at guidance 1.5"):
        recipes.collect({"current": base}, "current")



def refusal(capsys, tmp_path, runs: dict, baseline: str = "current") -> str:
    """`recipes.py`'s usage error for these `--runs` and `--baseline`, after checking nothing was written."""
    output = tmp_path / "recipes.json"
    argv = ["--runs", *(f"{name}={folder}" for name, folder in runs.items()), "--baseline", baseline,
            "--output", str(output)]
    with pytest.raises(SystemExit) as exit_info:
        recipes.main(argv)
    assert exit_info.value.code == 2 and not output.exists()
    return capsys.readouterr().err


def test_an_unknown_baseline_is_a_usage_error_naming_the_runs(tmp_path, capsys):
    base = write_run(tmp_path / "base", "scripts/train.py")
    snr = write_run(tmp_path / "snr", "scripts/train.py", snr_gamma=5.0)
    error = refusal(capsys, tmp_path, {"current": base, "snr": snr}, baseline="curent")
    assert "--baseline 'curent' is not one of the --runs names ['current', 'snr']" in error


def test_a_run_without_its_evaluation_or_training_record_is_a_usage_error_naming_the_writer(tmp_path, capsys):
    base = write_run(tmp_path / "base", "scripts/train.py")
    unevaluated = write_run(tmp_path / "unevaluated", "scripts/train.py", snr_gamma=5.0)
    (unevaluated / "eval.json").unlink()
    unrecorded = write_run(tmp_path / "unrecorded", "scripts/train.py", learning_rate=2e-3)
    (unrecorded / "training_config.json").unlink()
    runs = {"current": base, "snr": unevaluated, "lr": unrecorded, "typo": tmp_path / "nowhere"}
    error = refusal(capsys, tmp_path, runs)
    assert (f"--runs snr: {unevaluated / 'eval.json'} is missing (written by scripts/evaluate.py --output "
            f"{unevaluated / 'eval.json'})") in error
    assert f"--runs lr: {unrecorded / 'training_config.json'} is missing (written by scripts/train.py" in error
    assert f"--runs typo: {tmp_path / 'nowhere'} is not a folder" in error


def test_a_run_with_no_recorded_training_time_is_a_usage_error(tmp_path, capsys):
    base = write_run(tmp_path / "base", "scripts/train.py")
    instant = write_run(tmp_path / "instant", "scripts/train.py", minutes=0.0, snr_gamma=5.0)
    backwards = write_run(tmp_path / "backwards", "scripts/train.py", minutes=-1.0, learning_rate=2e-3)
    untimed = write_run(tmp_path / "untimed", "scripts/train.py", dropout=0.1)
    record = json.loads((untimed / "training_config.json").read_text())
    del record["train_minutes"]
    (untimed / "training_config.json").write_text(json.dumps(record))
    error = refusal(capsys, tmp_path, {"current": base, "instant": instant, "backwards": backwards, "untimed": untimed})
    assert "--runs instant: train_minutes must be a positive number of minutes, got 0.0" in error
    assert "--runs backwards: train_minutes must be a positive number of minutes, got -1.0" in error
    assert "--runs untimed: train_minutes must be a positive number of minutes, got none" in error


def test_the_docs_carry_the_committed_comparison():
    results = json.loads((ROOT / "benchmarks" / "recipes.json").read_text())
    assert recipes.recipes_table(results) in documentation(), "the recipe table is out of date"


def test_the_docs_carry_the_final_teachers_measured_rows():
    """The final recipe run (`benchmarks/final_teacher/`): its evaluation rows in the docs are the committed JSON's."""
    from mnist_diffusion.lab.reporting import evaluation_rows

    results = json.loads((ROOT / "benchmarks" / "final_teacher" / "evaluation.json").read_text())
    record = json.loads((ROOT / "benchmarks" / "final_teacher" / "training_config.json").read_text())
    assert results["num_samples"] == 5_000 and record["args"]["prediction_type"] == "v_prediction"
    docs = documentation()
    for row in evaluation_rows(results):
        assert row in docs, f"the docs lack the final teacher's measured row {row}"
    assert f"{record['global_step']:,} steps" in docs and f"{record['train_minutes']:.0f} minutes" in docs
