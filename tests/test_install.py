"""The package as `pip install .` leaves it, not as it sits in the checkout: its default models must be there too."""

import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_non_editable_install_finds_its_shipped_models_outside_the_checkout(tmp_path):
    # A copy of what setup.py packages, so that the build writes nothing into the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("mnist_diffusion", "pretrained"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.png", "*.gif"))
    # Built by this interpreter's pip and setuptools (a new venv's own setuptools may be too old to build a wheel).
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir",
                    str(tmp_path / "wheels"), str(source)], check=True, capture_output=True)
    shutil.rmtree(source)  # nothing may still point into the copy it was built from
    (wheel,) = (tmp_path / "wheels").glob("mnist_diffusion-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], check=True,
                   capture_output=True)
    # torch, diffusers and the rest come from this interpreter's site-packages, listed after the venv's own so that
    # the installed wheel wins. Not `venv --system-site-packages`: run from a virtualenv, that gives the *base*
    # Python's packages, which a newcomer's lacks. Plain path lines run no other .pth file, so this checkout's
    # editable install stays out. Written after the install: before it, pip takes the editable one for the one to
    # replace.
    site_dirs = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    (venv_site_packages,) = (venv / "lib").glob("python*/site-packages")
    (venv_site_packages / "running_interpreter.pth").write_text("\n".join(site_dirs) + "\n")

    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path

        import torch
        import mnist_diffusion
        from mnist_diffusion import MNISTDDPMPipeline
        from mnist_diffusion.lab.generate import main
        from mnist_diffusion.lab.shipped import SHIPPED_CLASSIFIER, SHIPPED_MODEL, SHIPPED_STUDENT

        installed = Path(mnist_diffusion.__file__).resolve().parent
        assert installed.is_relative_to(Path(sys.prefix).resolve()), installed
        for folder in (SHIPPED_MODEL, SHIPPED_STUDENT, SHIPPED_CLASSIFIER):
            assert folder.resolve().is_relative_to(installed), folder
        student = MNISTDDPMPipeline.from_pretrained(SHIPPED_STUDENT)
        student.set_progress_bar_config(disable=True)
        assert student(labels=[7], num_inference_steps=2, output_type="pt").images.shape == (1, 1, 28, 28)
        main(["--labels", "3", "--scheduler", "dpm", "--num_inference_steps", "2", "--output", "three.png"])
        from mnist_diffusion.lab.card import render_model_card  # its template is package data too

        assert "## Evaluation" in render_model_card(SHIPPED_MODEL)
        print("ok")
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([str(python), "-c", script], cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok") and (tmp_path / "three.png").is_file()
