"""Where the shipped models are: the DDPM, its consistency-distilled student and the evaluation classifier.

They are the default model of every command, so they must resolve in every install: in a checkout (editable or on the
path) they are its `pretrained/` folder, and `setup.py` packs them into the package for any other install.
"""

from pathlib import Path


def shipped_models_folder() -> Path:
    """
    Where the shipped models are: `pretrained/` of the checkout this package runs from (an editable install, or the
    source tree on the path), else the copy that an install put inside the package (`setup.py`'s package data).
    """
    package = Path(__file__).resolve().parents[1]  # mnist_diffusion/, this file being in mnist_diffusion/lab/
    checkout = package.parent / "pretrained"
    if (checkout / "mnist-ddpm" / "model_index.json").is_file():
        return checkout
    return package / "pretrained"


SHIPPED_MODEL = shipped_models_folder() / "mnist-ddpm"
SHIPPED_STUDENT = SHIPPED_MODEL.parent / "mnist-lcm"  # its consistency-distilled few-step student
SHIPPED_CLASSIFIER = SHIPPED_MODEL.parent / "mnist-classifier"  # the evaluation's independent judge
