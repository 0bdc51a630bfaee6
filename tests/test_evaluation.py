import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_diffusion import ClassConditionedUNet, MNISTDDPMPipeline, MNISTDDPMScheduler
from mnist_diffusion.lab.arguments import guidance_interval_type
from mnist_diffusion.lab.evaluation import (SetupError, accuracy_report, append_runs, choose_default, evaluate,
                                            feature_statistics, frechet_distance, frechet_distance_between,
                                            load_pipeline, run_cache_dir, store_default)
from mnist_diffusion.lab.evaluation import main as evaluation_main

from .conftest import TINY_UNET


def test_frechet_distance_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(500, 16))
    assert abs(frechet_distance_between(features, features)) < 1e-8


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    # Diagonal covariances: FD = ‖μ1 − μ2‖² + Σ_i (σ1_i − σ2_i)².
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([3.0, 1.0, 2.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-10)
    # A full covariance rotated the same way on both sides changes nothing but the basis.
    rotation, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    rotated = frechet_distance(rotation @ mu1, rotation @ np.diag(var1) @ rotation.T,
                               rotation @ mu2, rotation @ np.diag(var2) @ rotation.T)
    assert rotated == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_of_shifted_samples_approaches_the_shift():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(20000, 4)), rng.normal(size=(20000, 4)) + np.array([1.0, 0, 0, 0])
    assert frechet_distance_between(a, b) == pytest.approx(1.0, abs=0.03)
    mean, covariance = feature_statistics(a)
    assert mean.shape == (4,) and covariance.shape == (4, 4)


def test_accuracy_report_counts_per_digit():
    requested = torch.tensor([0, 0, 0, 0, 1, 1, 7, 7])
    predicted = torch.tensor([0, 0, 0, 6, 1, 1, 1, 7])
    report = accuracy_report(predicted, requested)
    assert report["correct"] == 6 and report["total"] == 8 and report["accuracy"] == pytest.approx(0.75)
    assert report["per_digit"]["0"] == {"accuracy": 0.75, "correct": 3, "total": 4}
    assert report["per_digit"]["1"] == {"accuracy": 1.0, "correct": 2, "total": 2}
    assert report["per_digit"]["7"]["accuracy"] == 0.5 and report["worst_digit"] == "7"
    assert set(report["per_digit"]) == {"0", "1", "7"}


def run_record(scale, accuracy, worst, ratio, interval=None):
    return {"guidance_scale": scale, "guidance_interval": interval, "accuracy": accuracy, "worst_digit": "3",
            "per_digit": {"3": {"accuracy": worst}}, "frechet_ratio_to_real_floor": ratio}


def sweep(*runs, n=5000):
    return {"model_dir": "m", "classifier_dir": "c", "num_samples": n, "seed": 0,
            "real_floor_frechet_distance": 0.07, "runs": list(runs)}


def test_choose_default_takes_the_most_realistic_legible_run():
    results = sweep(run_record(1.0, 0.971, 0.95, 2.8),             # not legible enough
                    run_record(1.3, 0.996, 0.988, 3.5),            # worst digit under 99%
                    run_record(1.4, 0.995, 0.99, 4.0),             # both bars met exactly
                    run_record(2.0, 0.999, 0.995, 9.0),
                    run_record(2.0, 0.997, 0.995, 3.9, [82, 579]))  # legible and closer to real: the winner
    assert choose_default(results) == results["runs"][4]
    assert choose_default({**results, "runs": results["runs"][:4]})["guidance_scale"] == 1.4


def test_choose_default_refuses_small_evaluations_and_sweeps_without_a_legible_run():
    with pytest.raises(ValueError, match="n = 500"):
        choose_default(sweep(run_record(2.0, 1.0, 1.0, 9.0), n=500))
    with pytest.raises(ValueError, match="widen the sweep"):
        choose_default(sweep(run_record(1.0, 0.971, 0.95, 2.8)))


def test_store_default_writes_scale_and_interval_into_model_index(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "MNISTDDPMPipeline",
                                                           "default_guidance_scale": 1.5}))
    store_default(tmp_path, run_record(1.3, 0.996, 0.99, 3.0, [82, 579]))
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index == {"_class_name": "MNISTDDPMPipeline", "default_guidance_scale": 1.3,
                     "default_guidance_interval": [82, 579]}
    assert [p.name for p in tmp_path.iterdir()] == ["model_index.json"]


def test_append_runs_grows_a_sweep_measured_the_same_way_only(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(sweep(run_record(1.0, 0.97, 0.95, 2.8))))
    grown = append_runs(path, sweep(run_record(2.0, 0.99, 0.98, 5.0, [82, 579])))
    assert [run["guidance_scale"] for run in grown["runs"]] == [1.0, 2.0]
    with pytest.raises(ValueError, match="num_samples"):
        append_runs(path, sweep(n=500))
    with pytest.raises(ValueError, match="real floor"):
        append_runs(path, {**sweep(), "real_floor_frechet_distance": 0.08})
    # An evaluation written before models were identified by their weights cannot be shown to be of the same model.
    with pytest.raises(ValueError, match="it records no model_sha256"):
        append_runs(path, {**sweep(), "model_sha256": "ab"})


@pytest.mark.parametrize("text, expected", [("all", "all"), ("82,579", (82.0, 579.0)), ("0,0", (0.0, 0.0))])
def test_guidance_interval_type_reads_low_high_or_all(text, expected):
    assert guidance_interval_type(text) == expected


@pytest.mark.parametrize("text", ["82", "a,b", "600,100", "-1,5", "1,2,3"])
def test_guidance_interval_type_names_a_bad_interval(text):
    with pytest.raises(argparse.ArgumentTypeError, match=text):
        guidance_interval_type(text)


def test_evaluate_scores_every_configuration_and_resumes_from_its_cache(tmp_path, tiny_model_and_classifier,
                                                                         synthetic_mnist, monkeypatch):
    model_dir, classifier_dir = tiny_model_and_classifier
    settings = dict(model_dir=str(model_dir), classifier_dir=str(classifier_dir), data_dir=str(synthetic_mnist),
                    samplers=["dpm"], guidance_scales=[1.0, 2.0], samples_per_digit=3, num_inference_steps=2,
                    batch_size=10, guidance_intervals=[None, (0.0, 500.0)], cache_dir=str(tmp_path / "cache"))
    results = evaluate(**settings)
    assert results["num_samples"] == 30 and results["real_floor_frechet_distance"] > 0
    runs = results["runs"]
    assert [(r["guidance_scale"], r["guidance_interval"]) for r in runs] == [
        (1.0, None), (1.0, [0.0, 500.0]), (2.0, None), (2.0, [0.0, 500.0])]
    for run in runs:
        assert run["total"] == 30 and set(run["per_digit"]) == set(map(str, range(10)))
        assert run["frechet_ratio_to_real_floor"] == pytest.approx(run["frechet_distance"] / results["real_floor_frechet_distance"])
    # Guidance 1 needs no interval: both runs draw the same digits.
    assert runs[0]["frechet_distance"] == pytest.approx(runs[1]["frechet_distance"], rel=1e-9)
    assert len(list((tmp_path / "cache").glob("*/batch-*.pt"))) == 4 * 3

    # A rerun (after a kill, say) generates nothing: every batch comes from the cache, with its recorded time.
    def no_generation(*args, **kwargs):
        raise AssertionError("the pipeline ran although every batch was cached")

    monkeypatch.setattr(MNISTDDPMPipeline, "__call__", no_generation)
    again = evaluate(**settings)
    assert [r["frechet_distance"] for r in again["runs"]] == [r["frechet_distance"] for r in runs]
    assert [r["generation_seconds"] for r in again["runs"]] == [r["generation_seconds"] for r in runs]


def save_other_model(folder: Path) -> Path:
    """A tiny pipeline of other weights than `tiny_pipe`'s (another seed), e.g. a retrained or untrained model."""
    torch.manual_seed(1)
    MNISTDDPMPipeline(unet=ClassConditionedUNet(**TINY_UNET), scheduler=MNISTDDPMScheduler()).save_pretrained(folder)
    return folder


def serve_as_hub_repos(monkeypatch, repos: dict) -> None:
    """Make the loader resolve the Hub repo ids of `repos` to their folders, as an offline Hub cache would: the name
    `org/a` says nothing of the files it holds."""
    load = MNISTDDPMPipeline.from_pretrained.__func__
    monkeypatch.setattr(MNISTDDPMPipeline, "from_pretrained",
                        classmethod(lambda cls, name, **kwargs: load(cls, repos.get(str(name), name), **kwargs)))


def test_a_cache_shared_by_two_models_never_serves_one_the_others_images(tmp_path, tiny_model_and_classifier,
                                                                         synthetic_mnist, monkeypatch):
    model_a, classifier_dir = tiny_model_and_classifier
    serve_as_hub_repos(monkeypatch, {"org/a": model_a, "org/b": save_other_model(tmp_path / "b")})
    common = dict(classifier_dir=str(classifier_dir), data_dir=str(synthetic_mnist), samplers=["dpm"],
                  guidance_scales=[1.0], samples_per_digit=3, num_inference_steps=2, batch_size=10)
    a = evaluate("org/a", cache_dir=str(tmp_path / "cache"), **common)
    b = evaluate("org/b", cache_dir=str(tmp_path / "cache"), **common)
    b_alone = evaluate("org/b", **common)
    assert a["model_sha256"] != b["model_sha256"] == b_alone["model_sha256"]
    assert b["runs"][0]["frechet_distance"] == pytest.approx(b_alone["runs"][0]["frechet_distance"], rel=1e-9)
    assert b["runs"][0]["frechet_distance"] != pytest.approx(a["runs"][0]["frechet_distance"], rel=1e-6)
    assert len(list((tmp_path / "cache").glob("*/settings.json"))) == 2


def test_a_models_identity_is_its_weights_and_schedule_not_its_name_or_dtype(tmp_path, tiny_pipe):
    tiny_pipe.save_pretrained(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    _, identity = load_pipeline(str(tmp_path / "a"))
    bf16, bf16_identity = load_pipeline(str(tmp_path / "copy" / ".." / "a"), torch.bfloat16)
    assert load_pipeline(str(tmp_path / "copy"))[1] == bf16_identity == identity
    assert bf16.unet.dtype == torch.bfloat16
    assert load_pipeline(str(save_other_model(tmp_path / "b")))[1] != identity
    MNISTDDPMPipeline(unet=tiny_pipe.unet, scheduler=MNISTDDPMScheduler(beta_schedule="squaredcos_cap_v2")).save_pretrained(
        tmp_path / "cosine")
    assert load_pipeline(str(tmp_path / "cosine"))[1] != identity


def test_the_cache_folder_is_named_by_everything_that_makes_the_images(tmp_path):
    key = {"model_sha256": "ab", "sampler": "dpm", "guidance_scale": 1.5, "batch_size": 10}
    first = run_cache_dir(tmp_path / "cache", key)
    assert run_cache_dir(tmp_path / "cache", dict(reversed(key.items()))) == first
    for name, other in (("model_sha256", "cd"), ("guidance_scale", 2.0), ("batch_size", 20)):
        assert run_cache_dir(tmp_path / "cache", {**key, name: other}) != first
    assert json.loads((first / "settings.json").read_text()) == key


def refused(capsys, argv: list[str]) -> str:
    """Run `scripts/evaluate.py` with `argv`, expecting a usage error (exit status 2); its message."""
    with pytest.raises(SystemExit) as exit_info:
        evaluation_main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def no_work(monkeypatch) -> None:
    """Make any generation or classifier loading fail the test: a usage error must come before either."""
    def fail(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(MNISTDDPMPipeline, "__call__", fail)
    monkeypatch.setattr("mnist_diffusion.lab.classifier.DigitClassifier.from_pretrained", fail)


def no_downloads(monkeypatch) -> None:
    """Make a download of MNIST fail at once without touching the network: a mirror on 127.0.0.1 where nothing
    listens, reached directly."""
    monkeypatch.setenv("MNIST_MIRROR", "http://127.0.0.1:9/")
    for proxy in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(proxy, raising=False)


@pytest.mark.parametrize("options, message", [
    (["--num_inference_steps", "0"], "--num_inference_steps: expected an integer ≥ 1, got 0"),
    (["--num_inference_steps", "8", "-3"], "--num_inference_steps: expected an integer ≥ 1, got -3"),
    (["--batch_size", "0"], "--batch_size: expected an integer ≥ 1, got 0"),
    (["--batch_size", "-5"], "--batch_size: expected an integer ≥ 1, got -5"),
    (["--guidance_scales", "1", "nan"], "--guidance_scales: expected a finite number ≥ 0, got nan"),
    (["--guidance_scales", "1", "2", "-1"], "--guidance_scales: expected a finite number ≥ 0, got -1.0"),
    (["--guidance_intervals", "600,100"], "expected 0 ≤ LOW ≤ HIGH, got '600,100'"),
    (["--samples_per_digit", "1"], "--samples_per_digit: expected an integer ≥ 2, got 1"),
    (["--samples_per_digit", "100", "--store_default"], "n ≥ 5000; --samples_per_digit 100 gives n = 1000"),
])
def test_nonsense_values_are_usage_errors_before_any_work(tmp_path, capsys, monkeypatch, options, message):
    no_work(monkeypatch)
    assert message in refused(capsys, ["--output", str(tmp_path / "out.json"), *options])
    assert not (tmp_path / "out.json").exists()


def test_every_value_of_a_sweep_is_checked_against_the_model_before_the_first_image(tmp_path, capsys, monkeypatch,
                                                                                     tiny_model_and_classifier):
    model_dir, _ = tiny_model_and_classifier
    no_work(monkeypatch)
    error = refused(capsys, ["--model_dir", str(model_dir), "--samplers", "dpm", "--num_inference_steps", "2", "8",
                             "1001", "--guidance_intervals", "all", "0,2000", "--output", str(tmp_path / "out.json")])
    assert "at most 1000, got 1001" in error and "got (0.0, 2000.0)" in error
    for model in (tmp_path / "missing", tmp_path):  # no folder; a folder without model_index.json
        assert f"{model} cannot be loaded as a pipeline" in refused(capsys, ["--model_dir", str(model)])


def test_guidance_on_a_distilled_student_is_refused_before_the_sweep(tmp_path, capsys, monkeypatch, tiny_unet):
    from diffusers import LCMScheduler

    MNISTDDPMPipeline(unet=tiny_unet, scheduler=LCMScheduler(beta_start=1e-4, beta_end=0.02),
                      default_num_inference_steps=2, distilled_guidance_scale=1.4).save_pretrained(tmp_path / "student")
    no_work(monkeypatch)
    error = refused(capsys, ["--model_dir", str(tmp_path / "student"), "--samplers", "lcm", "--guidance_scales",
                             "1", "2"])
    assert "lcm: `guidance_scale` must be 1 for this distilled student, got 2.0" in error


def test_append_is_checked_before_generating_and_knows_a_model_by_its_weights(tmp_path, capsys, monkeypatch,
                                                                             tiny_model_and_classifier,
                                                                             synthetic_mnist):
    model_dir, classifier_dir = tiny_model_and_classifier
    output = tmp_path / "sweep.json"
    common = ["--classifier_dir", str(classifier_dir), "--data_dir", str(synthetic_mnist), "--samplers", "dpm",
              "--num_inference_steps", "2", "--samples_per_digit", "3", "--batch_size", "10", "--output", str(output)]
    evaluation_main(["--model_dir", str(model_dir), "--guidance_scales", "1", *common])
    # The same model by another spelling of its path is the same model.
    evaluation_main(["--model_dir", str(model_dir / ".." / model_dir.name), "--guidance_scales", "2", "--append",
                     *common])
    swept = json.loads(output.read_text())
    assert [run["guidance_scale"] for run in swept["runs"]] == [1.0, 2.0]

    no_work(monkeypatch)
    error = refused(capsys, ["--model_dir", str(save_other_model(tmp_path / "other")), "--append", *common])
    assert "Cannot append" in error and f"its model_sha256 is '{swept['model_sha256']}'" in error
    assert json.loads(output.read_text()) == swept


def test_cas_trains_on_the_given_digits_alone_and_tests_on_the_real_split(synthetic_mnist):
    from mnist_diffusion.lab.evaluation import classification_accuracy_score, real_training_digits

    images, labels = real_training_digits(str(synthetic_mnist), 32, seed=0)
    assert images.shape == (320, 1, 28, 28) and torch.equal(labels.bincount(), torch.full((10,), 32))
    assert 0 <= images.min() and images.max() <= 1
    # Each digit four times (the recipe's augmentation moves every copy differently), for enough steps to learn.
    images, labels = images.repeat(4, 1, 1, 1), labels.repeat(4)
    learned = classification_accuracy_score(images, labels, str(synthetic_mnist), seed=0)
    # The same digits with every label moved on by one teach the wrong classes: the score sees what legibility
    # (each digit is drawn well) does not.
    mislabelled = classification_accuracy_score(images, (labels + 1) % 10, str(synthetic_mnist), seed=0)
    assert learned["train_digits"] == 1280 and learned["accuracy"] > 0.5 > 0.2 > mislabelled["accuracy"], (
        learned, mislabelled)


def test_evaluate_with_cas_scores_every_run_and_the_real_reference(tmp_path, tiny_model_and_classifier,
                                                                   synthetic_mnist, capsys):
    model_dir, classifier_dir = tiny_model_and_classifier
    output = tmp_path / "cas.json"
    evaluation_main(["--model_dir", str(model_dir), "--classifier_dir", str(classifier_dir), "--data_dir",
                     str(synthetic_mnist), "--samplers", "dpm", "--num_inference_steps", "2", "--guidance_scales",
                     "1", "2", "--samples_per_digit", "13", "--cas", "--output", str(output), "--cache_dir",
                     str(tmp_path / "cache")])
    results = json.loads(output.read_text())
    assert results["cas_real"]["train_digits"] == 130 and 0 <= results["cas_real"]["accuracy"] <= 1
    assert [run["cas"]["train_digits"] for run in results["runs"]] == [130, 130]
    assert "CAS of 130 real training digits" in capsys.readouterr().out
    # A rerun with the cache trains nothing: every CAS, its wall time included, is the kept one.
    evaluation_main(["--model_dir", str(model_dir), "--classifier_dir", str(classifier_dir), "--data_dir",
                     str(synthetic_mnist), "--samplers", "dpm", "--num_inference_steps", "2", "--guidance_scales",
                     "2", "--samples_per_digit", "13", "--cas", "--output", str(tmp_path / "again.json"),
                     "--cache_dir", str(tmp_path / "cache")])
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["cas_real"] == results["cas_real"] and again["runs"][0]["cas"] == results["runs"][1]["cas"]
    # Runs with CAS appended to an evaluation without it bring their real reference along.
    common = ["--model_dir", str(model_dir), "--classifier_dir", str(classifier_dir), "--data_dir",
              str(synthetic_mnist), "--samplers", "dpm", "--num_inference_steps", "2", "--samples_per_digit", "13",
              "--output", str(tmp_path / "grown.json"), "--cache_dir", str(tmp_path / "cache")]
    evaluation_main(common + ["--guidance_scales", "1"])
    evaluation_main(common + ["--guidance_scales", "2", "--cas", "--append"])
    grown = json.loads((tmp_path / "grown.json").read_text())
    assert grown["cas_real"] == results["cas_real"] and "cas" in grown["runs"][1] and "cas" not in grown["runs"][0]
    capsys.readouterr()
    for arguments, message in ((["--samples_per_digit", "12"], "--samples_per_digit 12 gives only 120"),
                               (["--seed", str(2**31)], "--cas trains the classifier with --seed: --seed must be "
                                                        "below 2**31")):
        with pytest.raises(SystemExit):
            evaluation_main(["--model_dir", str(model_dir), "--cas", "--output", str(tmp_path / "unused.json")]
                            + arguments)
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("cas", [[], ["--cas"]])
def test_a_missing_data_folder_is_a_usage_error_naming_it_before_the_classifier_and_nothing_is_created(
        tmp_path, capsys, monkeypatch, tiny_model_and_classifier, cas):
    model_dir, classifier_dir = tiny_model_and_classifier
    no_work(monkeypatch)
    no_downloads(monkeypatch)
    missing = tmp_path / "nowhere" / "mnist"
    error = refused(capsys, ["--model_dir", str(model_dir), "--classifier_dir", str(classifier_dir), "--data_dir",
                             str(missing), "--output", str(tmp_path / "out.json"), *cas])
    assert f"--data_dir {missing}: MNIST file train-images-idx3-ubyte.gz is missing from {missing}" in error
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "out.json").exists()


def test_an_autoguided_evaluation_names_its_guidance_unet_and_keys_its_cache_by_it(tmp_path, tiny_model_and_classifier,
                                                                                 synthetic_mnist, tiny_unet):
    model, classifier_dir = tiny_model_and_classifier
    tiny_unet.save_pretrained(tmp_path / "guide")
    common = dict(classifier_dir=str(classifier_dir), data_dir=str(synthetic_mnist), samplers=["dpm"],
                  guidance_scales=[2.0], samples_per_digit=3, num_inference_steps=2, batch_size=10,
                  cache_dir=str(tmp_path / "cache"))
    plain = evaluate(str(model), **common)
    guided = evaluate(str(model), guidance_unet=str(tmp_path / "guide"), **common)
    assert guided["guidance_unet"] == str(tmp_path / "guide") and "guidance_unet" not in plain
    assert guided["model_sha256"] != plain["model_sha256"]
    assert guided["runs"][0]["frechet_distance"] != pytest.approx(plain["runs"][0]["frechet_distance"], rel=1e-6)
    assert len(list((tmp_path / "cache").glob("*/settings.json"))) == 2
    with pytest.raises(SetupError, match="--guidance_unet .*no-such-guide cannot be loaded"):
        evaluate(str(model), guidance_unet=str(tmp_path / "no-such-guide"), **common)
