"""Tests of `mnist_diffusion/lab/likelihood_evaluation.py` (`scripts/evaluate_likelihood.py`): the trial counts a run
reports and times, and the data it refuses before loading the model."""

import json

import pytest
from PIL import Image

from mnist_diffusion.lab.likelihood_evaluation import TRIAL_COUNTS, main, trial_counts
from mnist_diffusion.lab.reporting import zero_shot_rows

from .test_evaluation import no_downloads


def test_a_runs_trial_counts_are_the_tables_below_its_own_and_its_own():
    assert trial_counts(100) == list(TRIAL_COUNTS) == [10, 20, 50, 100]
    assert trial_counts(3) == [3] and trial_counts(10) == [10] and trial_counts(15) == [10, 15]
    assert trial_counts(20) == [10, 20] and trial_counts(150) == [10, 20, 50, 100, 150]


@pytest.mark.parametrize("num_trials, counts", [(3, [3]), (15, [10, 15])])
def test_a_run_reports_times_and_draws_every_trial_count_it_has(tiny_pipe, tmp_path, synthetic_mnist, num_trials,
                                                                 counts):
    from mnist_diffusion.lab.figures import confusion_figure

    tiny_pipe.save_pretrained(tmp_path / "model")
    main(["--model", str(tmp_path / "model"), "--data_dir", str(synthetic_mnist), "--pilot_images", "1",
          "--bound_images", "2", "--bound_timesteps", "1", "--classify_images", "4", "--num_trials", str(num_trials),
          "--timing_images", "1", "--output", str(tmp_path / "likelihood.json")])
    result = json.loads((tmp_path / "likelihood.json").read_text())
    zero_shot = result["zero_shot"]
    assert [(row["weighting"], row["num_trials"]) for row in zero_shot["accuracy"]] == [
        (weighting, count) for weighting in ("uniform", "bound") for count in counts]
    assert all(sum(map(sum, row["confusion_matrix"])) == 4 for row in zero_shot["accuracy"])
    assert [row["num_trials"] for row in zero_shot["timing"]] == counts
    assert [row.split(" | ")[0] for row in zero_shot_rows(result)] == [f"| {count}" for count in counts]
    pytest.importorskip("matplotlib")
    assert Image.open(confusion_figure(tmp_path / "likelihood.json", tmp_path / "confusion.png")).size[0] > 400


def test_a_missing_data_folder_is_a_usage_error_naming_it_before_the_model_and_nothing_is_created(tmp_path, capsys,
                                                                                                  monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the data were checked")

    monkeypatch.setattr("mnist_diffusion.lab.likelihood_evaluation.load_pipeline", fail)
    no_downloads(monkeypatch)
    missing = tmp_path / "nowhere" / "mnist"
    with pytest.raises(SystemExit) as exit_info:
        main(["--data_dir", str(missing), "--output", str(tmp_path / "out.json")])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"--data_dir {missing}: MNIST file t10k-images-idx3-ubyte.gz is missing from {missing}" in error
    assert list(tmp_path.iterdir()) == []


def test_store_proposal_writes_the_models_default_proposal_and_measures_its_spread(tiny_pipe, tmp_path,
                                                                                   synthetic_mnist):
    from mnist_diffusion import MNISTDDPMPipeline

    tiny_pipe.save_pretrained(tmp_path / "model")
    main(["--store_proposal", "--model", str(tmp_path / "model"), "--data_dir", str(synthetic_mnist),
          "--pilot_images", "2", "--bound_timesteps", "4", "--spread_images", "2", "--spread_seeds", "3",
          "--output", str(tmp_path / "proposal.json")])
    record = json.loads((tmp_path / "proposal.json").read_text())
    stored = MNISTDDPMPipeline.from_pretrained(tmp_path / "model").config.likelihood_proposal
    assert len(stored) == 1000 and stored[0] == 0 and min(stored[1:]) > 0 and sum(stored) == pytest.approx(1, rel=1e-4)
    spread = record["spread"]
    assert len(spread["digits"]) == 2 and spread["seeds"] == 3 and spread["timesteps_per_image"] == 4
    assert spread["max_standard_deviation_bits_per_dim"] >= spread["mean_standard_deviation_bits_per_dim"] > 0
    assert record["command"].startswith("python scripts/evaluate_likelihood.py --model ")
    assert "--store_proposal --pilot_images 2" in record["command"] and "--cache_dir" not in record["command"]


def test_the_documented_spread_of_the_default_estimate_is_the_committed_measurement():
    from mnist_diffusion.lab.shipped import SHIPPED_MODEL

    from .conftest import documentation

    path = SHIPPED_MODEL / "evaluation" / "likelihood_proposal.json"
    if not path.is_file():
        pytest.skip(f"no {path}")
    spread = json.loads(path.read_text())["spread"]
    docs = documentation()
    mean, most = spread["mean_standard_deviation_bits_per_dim"], spread["max_standard_deviation_bits_per_dim"]
    assert f"by {mean:.3f} bits/dim on average (standard deviation; at most {most:.3f})" in docs
    assert f"varies by {mean:.3f} bits/dim over seeds" in docs  # the README's sentence
