"""
The rule that chooses a model's stored default guidance from a sweep (docs/evaluation.md), and the writing of it
into the pipeline's model_index.json.
"""

import json
from pathlib import Path

# The rule that picks the stored default (README, "Evaluation"): the most realistic set among the legible ones.
# The worst-digit bar was 98.5% until the guidance search (issue 38) raised it to 99%.
DEFAULT_RULE = {"min_accuracy": 0.995, "min_worst_digit_accuracy": 0.99, "min_samples": 5000}


def worst_digit_accuracy(run: dict) -> float:
    """The accuracy of the digit the classifier reads worst in `run`."""
    return run["per_digit"][run["worst_digit"]]["accuracy"]


def choose_default(results: dict, min_accuracy: float = DEFAULT_RULE["min_accuracy"],
                   min_worst_digit_accuracy: float = DEFAULT_RULE["min_worst_digit_accuracy"],
                   min_samples: int = DEFAULT_RULE["min_samples"]) -> dict:
    """
    The run of an evaluation with the smallest Fréchet ratio to the real floor among those whose accuracy is at least
    `min_accuracy` and whose worst digit is read correctly at least `min_worst_digit_accuracy` of the time.

    Args:
        results (`dict`): the output of [`evaluate`], measured on at least `min_samples` digits.

    Returns:
        `dict`: the chosen run.

    Raises:
        `ValueError`: the evaluation is smaller than `min_samples`, or no run meets both accuracy bars.
    """
    if results["num_samples"] < min_samples:
        raise ValueError(f"The rule compares Fréchet ratios at n ≥ {min_samples}; this evaluation has "
                         f"n = {results['num_samples']}.")
    legible = [run for run in results["runs"]
               if run["accuracy"] >= min_accuracy and worst_digit_accuracy(run) >= min_worst_digit_accuracy]
    if not legible:
        raise ValueError(f"No run reaches accuracy ≥ {min_accuracy:.1%} with every digit ≥ "
                         f"{min_worst_digit_accuracy:.1%}; widen the sweep.")
    return min(legible, key=lambda run: run["frechet_ratio_to_real_floor"])


def store_default(model_dir: str | Path, run: dict) -> None:
    """Write `run`'s guidance scale and interval into the pipeline's model_index.json as its call defaults."""
    store_in_model_index(model_dir, default_guidance_scale=run["guidance_scale"],
                         default_guidance_interval=run.get("guidance_interval"))


def store_in_model_index(model_dir: str | Path, remove: tuple[str, ...] = (), **values) -> None:
    """Write `values` into the pipeline config of `model_dir`'s model_index.json, without the entries `remove`,
    atomically."""
    path = Path(model_dir) / "model_index.json"
    index = {key: value for key, value in {**json.loads(path.read_text()), **values}.items() if key not in remove}
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)  # a reader sees the old file or the new one, never half of one
