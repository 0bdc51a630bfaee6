"""Tests of the evaluation classifier: a transformers model that loads with the Auto classes, and the batched
`DigitClassifier` that must agree with the image processor. Its training (training/classifier.py) is tested in test_classifier_training.py."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
from PIL import Image  # noqa: E402
from transformers import AutoImageProcessor, AutoModelForImageClassification, RegNetForImageClassification  # noqa: E402

from mnist_diffusion.lab.classifier import DigitClassifier, build_classifier  # noqa: E402
from mnist_diffusion.data import load_mnist  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"

TINY = dict(hidden_sizes=(8, 16), depths=(1, 1), embedding_size=8)


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


def test_the_pipeline_does_not_need_transformers():
    # transformers is an extra of the evaluation: every module but the classifier and its training imports without it
    # (diffusers then sees it as absent, as on a machine without it), and those two say what to install.
    script = """
import importlib, pkgutil, sys
sys.modules["transformers"] = None  # makes `import transformers` fail and find_spec report it missing
import mnist_diffusion
CLASSIFIER_MODULES = ("mnist_diffusion.lab.classifier", "mnist_diffusion.lab.training.classifier")
# With the prefix, walk_packages goes into the subpackages (the lab, its training) too.
for module in pkgutil.walk_packages(mnist_diffusion.__path__, prefix="mnist_diffusion."):
    if module.name not in CLASSIFIER_MODULES:
        importlib.import_module(module.name)
for name in CLASSIFIER_MODULES:
    try:
        importlib.import_module(name)
    except ImportError as error:
        print(error)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("pip install 'mnist-diffusion[eval]'") == 2, result.stdout
