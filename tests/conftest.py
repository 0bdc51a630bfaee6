from pathlib import Path

import pytest
import torch

from mnist_diffusion import ClassConditionedUNet, MNISTDDPMPipeline, MNISTDDPMScheduler
from mnist_diffusion.lab.synthetic_mnist import write_synthetic_mnist

ROOT = Path(__file__).resolve().parents[1]
TINY_UNET = dict(block_out_channels=(8, 16, 16), layers_per_block=1, attention_head_dim=8, norm_num_groups=4)


@pytest.fixture(autouse=True)
def _single_thread():
    # Keeps unit tests of tiny models cheap and predictable on a shared 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_unet():
    torch.manual_seed(0)
    return ClassConditionedUNet(**TINY_UNET).eval()


@pytest.fixture
def tiny_pipe(tiny_unet):
    pipe = MNISTDDPMPipeline(unet=tiny_unet, scheduler=MNISTDDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def synthetic_mnist(tmp_path_factory):
    """
    A data folder with a generated MNIST in the real IDX format (320 training and 100 test digits, see
    `mnist_diffusion/lab/synthetic_mnist.py`), for the tests whose behaviour does not depend on real digits, so
    that they run on a machine without the real files.
    """
    return write_synthetic_mnist(tmp_path_factory.mktemp("synthetic-mnist"))


def documentation() -> str:
    """The README and the reference pages in docs/, where the measured tables live."""
    return "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


@pytest.fixture
def tiny_model_and_classifier(tmp_path, tiny_pipe):
    from mnist_diffusion.lab.classifier import build_classifier

    tiny_pipe.save_pretrained(tmp_path / "model")
    torch.manual_seed(0)
    model, image_processor = build_classifier(hidden_sizes=(8, 16), depths=(1, 1), embedding_size=8)
    model.save_pretrained(tmp_path / "classifier")
    image_processor.save_pretrained(tmp_path / "classifier")
    return tmp_path / "model", tmp_path / "classifier"
