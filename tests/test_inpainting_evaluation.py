"""`mnist_diffusion/lab/inpainting_evaluation.py`: the bottom-half task, a tiny measurement, and the documented table."""

import json

import pytest
import torch

from mnist_diffusion.lab.inpainting_evaluation import bottom_half_task, evaluate_inpainting
from mnist_diffusion.lab.reporting import inpainting_table

from .conftest import documentation


def test_bottom_half_task_takes_the_first_digits_of_each_class_and_hides_rows_14_to_27():
    labels = torch.tensor([3, 0, 1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 1])
    chosen, mask = bottom_half_task(torch.zeros(len(labels), 28, 28), labels, per_class=1)
    assert chosen.tolist() == [1, 2, 4, 0, 6, 7, 8, 9, 10, 11]  # the first 0, the first 1, …, in class order
    assert mask[:14].sum() == 0 and bool((mask[14:] == 1).all())


def test_evaluate_inpainting_keeps_the_top_half_and_scores_both_labels(tiny_model_and_classifier, synthetic_mnist):
    model_dir, classifier_dir = tiny_model_and_classifier
    report = evaluate_inpainting(str(model_dir), str(classifier_dir), str(synthetic_mnist), per_class=1,
                                 num_inference_steps=3, jump_length=1, jump_n_sample=1, batch_size=4)
    assert report["mask"] == "bottom half (rows 14-27) regenerated"
    assert report["max_kept_pixel_change"] <= 1  # the kept pixels come back as given, up to rounding
    for name in ("true_label", "other_label"):
        assert report[name]["total"] == 10 and set(report[name]["per_digit"]) == set(map(str, range(10)))
    table = inpainting_table(report)
    assert table.count("\n") == 3 and f"| {report['max_kept_pixel_change']} / 255 |" in table


def test_the_readme_inpainting_table_is_the_shipped_measurement():
    from mnist_diffusion.lab.shipped import SHIPPED_MODEL

    results = SHIPPED_MODEL / "evaluation" / "inpainting.json"
    if not results.is_file():
        pytest.skip(f"no inpainting measurement at {results}")
    assert inpainting_table(json.loads(results.read_text())) in documentation(), "the inpainting table is out of date"
