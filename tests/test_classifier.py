"""Tests of the evaluation classifier: a transformers model that loads with the Auto classes, the batched
`DigitClassifier` that must agree with the image processor, and a tiny training run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
from PIL import Image  # noqa: E402
from transformers import AutoImageProcessor, AutoModelForImageClassification, RegNetForImageClassification  # noqa: E402

from mnist_diffusion.classifier import (  # noqa: E402
    DigitClassifier,
    build_classifier,
    parse_args,
    random_affine,
    to_unit_range,
    train_classifier,
)
from mnist_diffusion.data import load_mnist  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"

TINY = dict(hidden_sizes=(8, 16), depths=(1, 1), embedding_size=8)
TINY_ARGS = ["--hidden_sizes", "8", "16", "--depths", "1", "1", "--embedding_size", "8"]


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """64 uint8 digits (N, 28, 28) and their labels: real test digits when present, else random strokes."""
    if MNIST_DIR.is_dir():
        images, labels = load_mnist(MNIST_DIR, "test", download=False)
        return images[:64], labels[:64]
    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(64, 28, 28, dtype=torch.uint8)
    for image in images:
        row, col = torch.randint(4, 20, (2,), generator=generator).tolist()
        image[row : row + 8, col : col + 3] = torch.randint(100, 256, (8, 3), generator=generator, dtype=torch.uint8)
    return images, torch.arange(64) % 10


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    """An untrained tiny classifier saved as training saves it: model and image processor in one folder."""
    torch.manual_seed(0)
    model, image_processor = build_classifier(**TINY)
    folder = tmp_path_factory.mktemp("classifier")
    model.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    return folder


def as_pil(images: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray(image.numpy(), mode="L") for image in images]


def test_default_classifier_keeps_14_7_4_pixels_for_grey_digits():
    model, image_processor = build_classifier()
    assert isinstance(model, RegNetForImageClassification) and model.config.num_channels == 1
    assert model.config.id2label == {digit: str(digit) for digit in range(10)}
    assert model.config.label2id == {str(digit): digit for digit in range(10)}
    with torch.no_grad():
        outputs = model.regnet(torch.zeros(2, 1, 28, 28), output_hidden_states=True)
    # hidden_states: the stem output, then each stage's output
    assert [h.shape[-1] for h in outputs.hidden_states] == [14, 14, 7, 4]
    assert outputs.pooler_output.flatten(1).shape == (2, 128)
    assert not image_processor.do_resize
    assert list(image_processor.image_mean) == [0.5] and list(image_processor.image_std) == [0.5]


def test_auto_classes_classify_a_pil_digit_with_no_code_of_ours(classifier_dir, digits):
    image_processor = AutoImageProcessor.from_pretrained(classifier_dir)
    model = AutoModelForImageClassification.from_pretrained(classifier_dir).eval()
    assert isinstance(model, RegNetForImageClassification)

    image = as_pil(digits[0][:1])[0]
    inputs = image_processor(image, return_tensors="pt")
    # A 2-D grey image gets a channel axis and the processor's (x / 255 − 0.5) / 0.5, nothing else.
    expected = digits[0][:1].float().div(255).sub(0.5).div(0.5).unsqueeze(1)
    torch.testing.assert_close(inputs["pixel_values"], expected, rtol=0, atol=1e-6)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, 10)
    assert model.config.id2label[logits.argmax(-1).item()] in [str(digit) for digit in range(10)]

    batch = image_processor(as_pil(digits[0][:5]), return_tensors="pt")["pixel_values"]
    assert batch.shape == (5, 1, 28, 28)
    # Arrays need their channel axis (a bare 28 × 28 array is ambiguous to transformers); either side works.
    array = digits[0][0].numpy()
    for with_channel in (array[None], array[..., None]):
        torch.testing.assert_close(image_processor(with_channel, return_tensors="pt")["pixel_values"], expected)


def test_digit_classifier_matches_the_image_processor_path(classifier_dir, digits):
    images = digits[0]
    image_processor = AutoImageProcessor.from_pretrained(classifier_dir)
    model = AutoModelForImageClassification.from_pretrained(classifier_dir).eval()
    with torch.no_grad():
        reference = model(**image_processor(as_pil(images), return_tensors="pt")).logits

    classifier = DigitClassifier.from_pretrained(classifier_dir, batch_size=24)  # batches of 24, 24 and 16
    torch.testing.assert_close(classifier.logits(images), reference, rtol=0, atol=1e-4)
    torch.testing.assert_close(classifier.logits(images.float().div(255).unsqueeze(1)), reference, rtol=0, atol=1e-4)
    assert torch.equal(classifier.predict(images), reference.argmax(-1))


def test_features_are_the_pooled_penultimate_layer_in_float64(classifier_dir, digits):
    images = digits[0]
    classifier = DigitClassifier.from_pretrained(classifier_dir, batch_size=24)
    features = classifier.features(images)
    assert features.shape == (len(images), TINY["hidden_sizes"][-1]) and features.dtype == torch.float64
    with torch.no_grad():
        pooled = classifier.model.regnet(classifier.pixel_values(images)).pooler_output.flatten(1)
        logits = classifier.model.classifier(features.float())
    torch.testing.assert_close(features, pooled.double(), rtol=0, atol=1e-6)
    torch.testing.assert_close(logits, classifier.logits(images), rtol=0, atol=1e-5)  # the head reads these features


def test_predict_gives_the_same_labels_for_uint8_and_unit_float_digits(classifier_dir, digits):
    images = digits[0]
    classifier = DigitClassifier.from_pretrained(classifier_dir)
    labels = classifier.predict(images)
    assert labels.dtype == torch.int64 and labels.shape == (len(images),)
    assert torch.equal(classifier.predict(images.float().div(255).unsqueeze(1)), labels)
    assert torch.equal(classifier.predict(images.unsqueeze(1)), labels)  # (N, 1, 28, 28) uint8 too


def test_digits_in_the_wrong_range_or_shape_are_refused(classifier_dir):
    classifier = DigitClassifier.from_pretrained(classifier_dir)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\].*images / 2 \+ 0.5"):
        classifier.predict(torch.rand(4, 1, 28, 28) * 2 - 1)
    with pytest.raises(ValueError, match=r"shaped \(N, 28, 28\) or \(N, 1, 28, 28\), got \(4, 3, 28, 28\)"):
        classifier.predict(torch.rand(4, 3, 28, 28))


def test_a_resizing_image_processor_is_refused():
    model, image_processor = build_classifier(**TINY)
    image_processor.do_resize = True
    with pytest.raises(ValueError, match="`do_resize` is set"):
        DigitClassifier(model, image_processor)


def test_augmentation_moves_digits_but_keeps_them_whole(digits):
    torch.manual_seed(0)
    images = to_unit_range(digits[0])
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
    saved = json.loads((out / "training_results.json").read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved["epochs_completed"] == 1 and saved["global_step"] == 256 // 64 and not saved["stopped_by_time_limit"]
    assert saved["test_total"] == 100 and saved["config"]["hidden_sizes"] == [8, 16]
    assert saved["mixed_precision"] == "bf16" and saved["command"].startswith("scripts/train_classifier.py")

    model = AutoModelForImageClassification.from_pretrained(out)
    assert isinstance(model, RegNetForImageClassification)
    assert list(AutoImageProcessor.from_pretrained(out).image_mean) == [0.5]
    test_images, test_labels = load_mnist(synthetic_mnist, "test", download=False)
    predicted = DigitClassifier.from_pretrained(out).predict(test_images[:100])
    assert (predicted == test_labels[:100]).float().mean().item() == pytest.approx(saved["test_accuracy"])


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


def test_the_pipeline_does_not_need_transformers():
    # transformers is an extra of the evaluation: every module but the classifier imports without it (diffusers
    # then sees it as absent, as on a machine without it), and the classifier says what to install.
    script = """
import importlib, pkgutil, sys
sys.modules["transformers"] = None  # makes `import transformers` fail and find_spec report it missing
import mnist_diffusion
for module in pkgutil.iter_modules(mnist_diffusion.__path__):
    if module.name != "classifier":
        importlib.import_module(f"mnist_diffusion.{module.name}")
try:
    import mnist_diffusion.classifier
except ImportError as error:
    print(error)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert "pip install 'mnist-diffusion[eval]'" in result.stdout
