"""Tests of `mnist_diffusion/lab/training/classifier.py`: the augmentation, a tiny training run on the generated MNIST of
`mnist_diffusion/lab/synthetic_mnist.py`, its time budget and its options."""

import hashlib
import json

import pytest
import torch

pytest.importorskip("transformers")
from transformers import AutoImageProcessor, AutoModelForImageClassification, RegNetForImageClassification  # noqa: E402

from mnist_diffusion.lab.classifier import DigitClassifier  # noqa: E402
from mnist_diffusion.images import digits_to_unit_range  # noqa: E402
from mnist_diffusion.data import load_mnist  # noqa: E402
from mnist_diffusion.lab.training.classifier import parse_args, random_affine, train_classifier  # noqa: E402

TINY_ARGS = ["--hidden_sizes", "8", "16", "--depths", "1", "1", "--embedding_size", "8"]


def test_augmentation_moves_digits_but_keeps_them_whole(synthetic_mnist):
    torch.manual_seed(0)
    images = digits_to_unit_range(load_mnist(synthetic_mnist, "test", download=False)[0][:64])
    moved = random_affine(images)
    assert moved.shape == images.shape and moved.min() >= 0 and moved.max() <= 1
    assert (moved - images).abs().amax(dim=(1, 2, 3)).min() > 0.1  # every digit moved
    ink_ratio = moved.sum(dim=(1, 2, 3)) / images.sum(dim=(1, 2, 3))
    assert ink_ratio.min() > 0.7 and ink_ratio.max() < 1.3  # ±10% scale changes the ink by ±20%, no digit is cut off


def test_one_epoch_of_training_writes_a_folder_the_auto_classes_load(tmp_path, synthetic_mnist):
    out = tmp_path / "classifier"
    record = train_classifier(parse_args([
        "--data_dir", str(synthetic_mnist), "--output_dir", str(out), *TINY_ARGS, "--num_epochs", "1",
        "--max_train_samples", "256", "--max_eval_samples", "100", "--train_batch_size", "64",
    ]))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "training_results.json"} <= {
        p.name for p in out.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classifier"]  # the staging folder was swapped in whole
    saved = json.loads((out / "training_results.json").read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved["epochs_completed"] == 1 and saved["global_step"] == 256 // 64 and not saved["stopped_by_time_limit"]
    assert saved["test_total"] == 100 and saved["config"]["hidden_sizes"] == [8, 16]
    assert saved["mixed_precision"] == "bf16" and saved["command"].startswith("scripts/train_classifier.py")
    assert saved["images_seen"] == 256 and saved["hardware"]  # the run record of record.run_record

    model = AutoModelForImageClassification.from_pretrained(out)
    assert isinstance(model, RegNetForImageClassification)
    assert list(AutoImageProcessor.from_pretrained(out).image_mean) == [0.5]
    test_images, test_labels = load_mnist(synthetic_mnist, "test", download=False)
    predicted = DigitClassifier.from_pretrained(out).predict(test_images[:100])
    assert (predicted == test_labels[:100]).float().mean().item() == pytest.approx(saved["test_accuracy"])


def test_train_digits_replace_the_training_split_and_the_test_split_stays_real(tmp_path, synthetic_mnist):
    # A file of "generated" digits, here the synthetic test digits with their labels reversed: a classifier trained
    # on it alone learns the reversed classes, which the real test split then marks wrong.
    images, labels = load_mnist(synthetic_mnist, "test", download=False)
    torch.save({"images": images, "labels": 9 - labels}, tmp_path / "digits.pt")
    record = train_classifier(parse_args([
        "--data_dir", str(synthetic_mnist), "--output_dir", str(tmp_path / "classifier"), *TINY_ARGS,
        "--train_digits", str(tmp_path / "digits.pt"), "--num_epochs", "30", "--train_batch_size", "50",
        "--learning_rate", "0.01",
    ]))
    assert record["images_seen"] == 30 * 100 and record["args"]["train_digits"] == str(tmp_path / "digits.pt")
    assert record["test_total"] == 100 and record["test_accuracy"] < 0.1
    # The record names the digits it trained on by content, not only by path.
    assert record["data"]["sha256"] == hashlib.sha256((tmp_path / "digits.pt").read_bytes()).hexdigest()
    assert record["data"]["num_train_images"] == 100 and sum(record["data"]["per_class"]) == 100
    predicted = DigitClassifier.from_pretrained(tmp_path / "classifier").predict(images)
    assert (predicted == 9 - labels).float().mean() > 0.25  # it learned the file's labels (chance: 0.1)


@pytest.mark.parametrize("content, message", [
    ({"images": torch.zeros(4, 28, 28), "labels": torch.zeros(4, dtype=torch.long)}, "must hold uint8 `images`"),
    ({"images": torch.zeros(4, 28, 28, dtype=torch.uint8), "labels": torch.full((4,), 10)}, "one int64 label in 0–9"),
    ([1, 2], "must hold uint8 `images`"),
    (b"", "digits.pt cannot be read as a torch file of digits (EOFError"),
    (b"images,labels\n", "digits.pt cannot be read as a torch file of digits"),
    ({"images": torch.zeros(4, 28, 28, dtype=torch.uint8), "labels": torch.zeros(4, dtype=torch.long)},
     "holds 4 digits to train on, fewer than one batch of --train_batch_size 128"),
])
def test_bad_train_digits_are_refused_before_training(tmp_path, capsys, content, message):
    if isinstance(content, bytes):
        (tmp_path / "digits.pt").write_bytes(content)
    else:
        torch.save(content, tmp_path / "digits.pt")
    with pytest.raises(SystemExit):
        parse_args([*TINY_ARGS, "--train_digits", str(tmp_path / "digits.pt"), "--output_dir", str(tmp_path / "out")])
    assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([*TINY_ARGS, "--train_digits", str(tmp_path / "missing.pt")])
    assert "missing.pt is not a file" in capsys.readouterr().err


def test_train_digits_never_go_into_the_shipped_classifiers_folder(tmp_path, capsys):
    images = torch.zeros(200, 28, 28, dtype=torch.uint8)
    torch.save({"images": images, "labels": torch.arange(200) % 10}, tmp_path / "digits.pt")
    with pytest.raises(SystemExit):  # the default --output_dir is the shipped evaluation classifier
        parse_args([*TINY_ARGS, "--train_digits", str(tmp_path / "digits.pt")])
    assert "give it an --output_dir of its own" in capsys.readouterr().err
    assert parse_args([*TINY_ARGS, "--train_digits", str(tmp_path / "digits.pt"), "--output_dir",
                       str(tmp_path / "out")]).output_dir == str(tmp_path / "out")


def test_time_limit_stops_training_and_still_saves(tmp_path, synthetic_mnist):
    out = tmp_path / "classifier"
    record = train_classifier(parse_args([
        "--data_dir", str(synthetic_mnist), "--output_dir", str(out), *TINY_ARGS, "--num_epochs", "3",
        "--max_train_samples", "256", "--max_eval_samples", "50", "--train_batch_size", "64",
        "--max_train_minutes", "1e-9",
    ]))
    assert record["stopped_by_time_limit"] and record["global_step"] == 1 and record["epochs_completed"] == 0
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--hidden_sizes", "8", "16", "32"], "must be positive and of the same length"),
        (["--num_epochs", "0"], "--num_epochs must be a positive integer, got 0"),
        (["--max_train_samples", "0"], "--max_train_samples must be a positive integer, got 0"),
    ],
)
def test_nonsense_options_fail_before_training(capsys, extra, message):
    with pytest.raises(SystemExit):
        parse_args([*TINY_ARGS, *extra])
    assert message in capsys.readouterr().err


def test_help_lists_every_option_with_its_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # no line wrapping inside the strings looked for
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = capsys.readouterr().out
    assert "scale (±10%)" in help_text and "(default: pretrained/mnist-classifier)" in help_text
