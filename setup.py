from pathlib import Path

from setuptools import find_packages, setup

TRAIN = ["accelerate>=1.10,<2", "tensorboard>=2.15", "tqdm>=4.66"]
# The evaluation classifier is a transformers model; transformers before 5.18 cannot load its image processor
# (ConvNextImageProcessorPil) without torchvision. matplotlib draws the guidance plot.
EVAL = ["transformers>=5.18,<6", "accelerate>=1.10,<2", "matplotlib>=3.8"]
# docs/tutorial.ipynb: nbclient runs it in an ipykernel (scripts/run_notebook.py, tests/test_notebook.py); matplotlib
# draws its figures.
NOTEBOOK = ["nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29", "matplotlib>=3.8"]

setup(
    name="mnist-diffusion",
    version="0.1.0",
    description="A class-conditional DDPM on MNIST for Hugging Face diffusers: from-scratch scheduler, UNet, pipeline.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    author="The mnist-diffusion authors",
    license="Apache-2.0",
    python_requires=">=3.10",
    # The shipped models travel inside the package (mnist_diffusion/pretrained/ once installed), so that the default
    # model of every command exists in any install, not only in a checkout; their figures stay in the repository.
    packages=find_packages(include=["mnist_diffusion", "mnist_diffusion.*"]) + ["mnist_diffusion.pretrained"],
    package_dir={"mnist_diffusion.pretrained": "pretrained"},
    package_data={"mnist_diffusion": ["lab/templates/*.md"],
                  "mnist_diffusion.pretrained": ["*/*.json", "*/*/*.json", "*/*.safetensors", "*/unet/*.safetensors"]},
    # The support window: every torch and diffusers release since December 2025, tested at both ends by .ci/run
    # (the oldest set in ci/oldest.txt, the newest installable). huggingface_hub: diffusers 0.36 takes < 2, and the
    # eval extra's oldest transformers (5.18) >= 1.31. Install the CPU build of torch first on machines without a GPU:
    # a torch requirement with no torch present pulls several GB of CUDA packages.
    install_requires=[
        "torch>=2.10",
        "diffusers>=0.36",
        "huggingface_hub>=1.31,<3",
        "safetensors>=0.4",
        "numpy>=1.26",
        "pillow>=10",
        "jinja2>=3.1",  # the model cards are Jinja templates (huggingface_hub's ModelCard.from_template)
    ],
    extras_require={
        "train": TRAIN,
        "eval": EVAL,
        "demo": ["gradio>=6,<7"],
        "notebook": NOTEBOOK + TRAIN,  # the tutorial runs scripts/train.py
        "test": ["pytest>=8"],
        # playwright drives the system's Chromium in the demo's browser test (it never downloads a browser);
        # import-linter checks the layers of .importlinter (`lint-imports`, run by .ci/run).
        "dev": TRAIN + EVAL + NOTEBOOK + ["gradio>=6,<7", "playwright>=1.40", "pytest>=8", "import-linter>=2.16"],
    },
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
