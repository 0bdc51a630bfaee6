"""The Gradio demo, end to end in a real browser: headless Chromium (Debian's package) driven by Playwright."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# A closed network: without these Chromium keeps trying to reach Google's services.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
SCALE = 8  # demo/app.py shows digits upscaled 8×


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def demo_url(tiny_model_dir):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[demo]')")
    port = free_port()
    command = [sys.executable, str(ROOT / "demo" / "app.py"), "--model", str(tiny_model_dir), "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                pytest.fail(f"the demo did not start:\n{server.stdout.read()[-3000:]}")
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    import torch

    from mnist_diffusion import ClassConditionedUNet, MNISTDDPMPipeline, MNISTDDPMScheduler

    from .conftest import TINY_UNET

    folder = tmp_path_factory.mktemp("demo-model")
    torch.manual_seed(0)
    MNISTDDPMPipeline(ClassConditionedUNet(**TINY_UNET), MNISTDDPMScheduler()).save_pretrained(folder)
    return folder


def test_generate_shows_a_grid_of_28_pixel_digits(browser, demo_url):
    page = browser.new_page()
    page.goto(demo_url)
    page.get_by_label("3").check()  # digits 3 and 7 (7 is preselected), fast sampler by default
    page.locator("#generate").click()
    image = page.locator("#grid img")
    image.wait_for(state="visible", timeout=120_000)
    page.wait_for_function("() => { const i = document.querySelector('#grid img'); return i && i.naturalWidth > 0; }",
                           timeout=60_000)
    width, height = page.evaluate("() => { const i = document.querySelector('#grid img'); "
                                  "return [i.naturalWidth, i.naturalHeight]; }")
    # make_grid: 2 px padding around 28 px digits and a 12 px label margin, all upscaled 8×.
    columns, rows = (width // SCALE - 12 - 2) / 30, (height // SCALE - 2) / 30
    assert (rows, columns) == (2, 4), (width, height)
    page.close()


def test_inpaint_completes_an_uploaded_half_digit(browser, demo_url, tmp_path):
    import numpy as np
    from PIL import Image

    half_digit = np.zeros((280, 280), dtype=np.uint8)
    half_digit[40:140, 100:180] = 255  # white strokes on black, top half only; the demo scales it to 28 × 28
    Image.fromarray(half_digit, mode="L").save(tmp_path / "half.png")
    page = browser.new_page()
    page.goto(demo_url)
    page.get_by_role("tab", name="Inpaint").click()
    page.locator("#drawing input[type=file]").set_input_files(str(tmp_path / "half.png"))
    page.wait_for_timeout(1000)  # the editor loads the picture as its background
    page.locator("#complete").click()
    page.wait_for_function(
        "() => { const i = document.querySelector('#completions img'); return i && i.naturalWidth > 0; }",
        timeout=120_000,
    )
    width, height = page.evaluate("() => { const i = document.querySelector('#completions img'); "
                                  "return [i.naturalWidth, i.naturalHeight]; }")
    columns, rows = (width // SCALE - 2) / 30, (height // SCALE - 2) / 30
    assert (rows, columns) == (1, 4), (width, height)  # 4 completions (the default), one row
    page.close()
