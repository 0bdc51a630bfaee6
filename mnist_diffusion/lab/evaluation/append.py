"""
Adding runs to an earlier evaluation: only one measured the same way (model, classifier, n, seed, real floor).
"""

import json
from pathlib import Path

from .sampling import SetupError

# What must be equal for two evaluations to share a table: the model and the classifier (by their weights, however
# their folders are spelled), n and seed, and so the real floor their Fréchet ratios are divided by.
APPEND_KEYS = ("model_sha256", "classifier_sha256", "num_samples", "seed")


def appendable_problems(earlier: dict, results: dict) -> list[str]:
    """
    How `results` (or the part of it known so far) was measured differently from the `earlier` evaluation it is to be
    appended to: each of `APPEND_KEYS` and the real floor that both hold and that differ, and each identity that
    `results` has but `earlier` lacks (an evaluation written before they were recorded).
    """
    problems = []
    for key in APPEND_KEYS:
        if key not in results:
            continue
        if key not in earlier:
            problems.append(f"it records no {key} (it predates them), so this run cannot be shown to match it")
        elif earlier[key] != results[key]:
            problems.append(f"its {key} is {earlier[key]!r}, this run's is {results[key]!r}")
    floor = "real_floor_frechet_distance"
    if floor in results and abs(earlier[floor] - results[floor]) > 1e-9:
        problems.append(f"its real floor differs ({earlier[floor]} against {results[floor]}), so its ratios are not "
                        "comparable")
    return problems


def check_appendable(earlier: dict, results: dict) -> None:
    """Raise a [`SetupError`] naming every [`appendable_problems`] of `results` against `earlier`."""
    problems = appendable_problems(earlier, results)
    if problems:
        raise SetupError(f"Cannot append to the evaluation of {earlier.get('model_dir')}: {'; '.join(problems)}.")


def append_runs(path: str | Path, results: dict) -> dict:
    """
    `results` added to the evaluation already in `path`: its runs appended, after checking that both were measured
    the same way ([`check_appendable`]), so one sweep can grow over runs.
    """
    earlier = json.loads(Path(path).read_text())
    check_appendable(earlier, results)
    # The real CAS reference of these runs (same n, seed and data), if the earlier evaluation had none.
    reference = {"cas_real": results["cas_real"]} if "cas_real" in results and "cas_real" not in earlier else {}
    return {**earlier, **reference, "runs": earlier["runs"] + results["runs"]}
