import numpy as np
import pytest
import torch

from mnist_diffusion.evaluation import accuracy_report, feature_statistics, frechet_distance, frechet_distance_between


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
