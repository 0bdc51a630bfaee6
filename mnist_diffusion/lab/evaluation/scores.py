"""
What the evaluation classifier reads from a set of digits: the share read as the requested digit, and the
Fréchet distance of its features to the real test set, next to the real floor (n real training digits' distance).
"""


import numpy as np
import torch


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """
    Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ‖mu1 − mu2‖² + Tr(sigma1 + sigma2 − 2 (sigma1^½ sigma2 sigma1^½)^½).

    The matrix square roots are taken by symmetric eigendecomposition (negative round-off eigenvalues clipped to 0),
    which is exact for covariance matrices and needs no SciPy.
    """

    def sqrt_psd(matrix: np.ndarray) -> np.ndarray:
        eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
        return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T

    root1 = sqrt_psd(sigma1)
    cross = np.trace(sqrt_psd(root1 @ sigma2 @ root1))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * cross)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased) of a set of feature vectors, shaped (N, D)."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance_between(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def accuracy_report(predicted: torch.Tensor, requested: torch.Tensor, num_classes: int = 10) -> dict:
    """Overall and per-digit share of images the classifier reads as the requested digit, with the counts."""
    predicted, requested = torch.as_tensor(predicted), torch.as_tensor(requested)
    correct = predicted == requested
    per_digit = {}
    for digit in range(num_classes):
        asked = requested == digit
        if asked.any():
            per_digit[str(digit)] = {
                "accuracy": correct[asked].float().mean().item(),
                "correct": int(correct[asked].sum()),
                "total": int(asked.sum()),
            }
    return {
        "accuracy": correct.float().mean().item(),
        "correct": int(correct.sum()),
        "total": len(correct),
        "worst_digit": min(per_digit, key=lambda d: per_digit[d]["accuracy"]),
        "per_digit": per_digit,
    }


def real_floor(classifier, train_images: torch.Tensor, test_features: np.ndarray, n: int, seed: int) -> float:
    """Fréchet distance between n random real training digits and the test set: the best a generator can score."""
    chosen = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed))[:n]
    return frechet_distance_between(classifier.features(train_images[chosen]), test_features)
