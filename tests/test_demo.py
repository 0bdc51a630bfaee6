"""
The Gradio demo, end to end against the running app: its API through `gradio_client`, and its page in a real browser,
headless Chromium (Debian's package) driven by Playwright.
"""

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
FAST = "DPM-Solver++ (fast)"  # demo/app.py's labels of the fast sampler and of the distilled student
DISTILLED = "Distilled student (fastest)"
# What gradio_client reports for an exception that is not a gr.Error: the visitor learns nothing.
RAW_EXCEPTION = "has raised an exception"


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
    """A tiny model of the digits 0–7 only, so that asking it for a 9 is an error of the pipeline, not of the form."""
    import torch

    from mnist_diffusion import ClassConditionedUNet, MNISTDDPMPipeline, MNISTDDPMScheduler

    from .conftest import TINY_UNET

    folder = tmp_path_factory.mktemp("demo-model")
    torch.manual_seed(0)
    MNISTDDPMPipeline(ClassConditionedUNet(**TINY_UNET, num_classes=8), MNISTDDPMScheduler()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def client(demo_url):
    gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is not installed (it comes with gradio)")
    return gradio_client.Client(demo_url, verbose=False)


@pytest.fixture(scope="module")
def half_digit(tmp_path_factory):
    """The top half of a digit-like stroke, as a picture to upload, and the Sketchpad value that carries it."""
    import numpy as np
    from gradio_client import handle_file
    from PIL import Image

    pixels = np.zeros((280, 280), dtype=np.uint8)
    pixels[40:140, 100:180] = 255  # white strokes on black, top half only; the demo scales it to 28 × 28
    path = tmp_path_factory.mktemp("drawing") / "half.png"
    Image.fromarray(pixels, mode="L").save(path)
    return path, {"background": handle_file(str(path)), "layers": [], "composite": handle_file(str(path))}


GENERATE = dict(digits=["7"], images_per_digit=2, guidance_scale=1.5, sampler=FAST, fast_steps=20, seed=0)
COMPLETE = dict(digit="3", region="bottom half", completions=2, guidance_scale=1.5, seed=0)


def test_the_students_choice_shows_its_stored_number_of_steps(demo_url):
    import json
    from urllib.request import urlopen

    from mnist_diffusion import MNISTDDPMPipeline
    from mnist_diffusion.lab.shipped import SHIPPED_STUDENT

    with urlopen(f"{demo_url}/config", timeout=30) as response:
        config = json.load(response)
    [radio] = [c["props"] for c in config["components"] if c.get("props", {}).get("label") == "Sampler"]
    steps = MNISTDDPMPipeline.load_config(SHIPPED_STUDENT)["default_num_inference_steps"]
    label = f"Distilled student, {steps} step{'s' * (steps != 1)} (fastest)"
    assert [label, DISTILLED] in radio["choices"] and radio["value"] == DISTILLED


def test_the_distilled_student_is_the_first_sampler_and_ignores_the_guidance_slider(client):
    from PIL import Image

    from mnist_diffusion.lab.shipped import SHIPPED_STUDENT

    assert SHIPPED_STUDENT.is_dir(), f"the demo offers the shipped student, {SHIPPED_STUDENT}, which is missing"
    first, _ = client.predict(**{**GENERATE, "sampler": DISTILLED}, api_name="/generate")
    again, _ = client.predict(**{**GENERATE, "sampler": DISTILLED, "guidance_scale": 5.0}, api_name="/generate")
    assert Image.open(first).size == (SCALE * (12 + 2 + 2 * 30), SCALE * (2 + 30))
    first, again = Image.open(first), Image.open(again)
    assert (first.mode, first.size, first.tobytes()) == (again.mode, again.size, again.tobytes())  # guidance baked in


def test_the_api_generates_and_completes(client, half_digit):
    from PIL import Image

    grid, animation = client.predict(**GENERATE, api_name="/generate")
    assert Image.open(grid).size == (SCALE * (12 + 2 + 2 * 30), SCALE * (2 + 30))  # one row of two digits
    assert Image.open(animation).format == "GIF"
    masked, completions = client.predict(half_digit[1], **COMPLETE, api_name="/complete")
    assert Image.open(completions).size == (SCALE * (2 + 2 * 30), SCALE * (2 + 30))


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(seed=None), "Seed: expected an integer from 0 to 18446744073709551615, got None."),  # an emptied box
        (dict(seed=2**70), "Seed: expected an integer from 0 to 18446744073709551615, got 1180591620717411303424."),
        (dict(guidance_scale=None), "Guidance scale: expected a finite number from 0 to 6, got None."),
        (dict(guidance_scale=-1), "Guidance scale: expected a finite number from 0 to 6, got -1."),
        (dict(fast_steps=0), "Solver steps: expected an integer from 20 to 50, got 0."),
        (dict(fast_steps=None), "Solver steps: expected an integer from 20 to 50, got None."),
        (dict(images_per_digit=None), "Images per digit: expected an integer from 1 to 8, got None."),
        (dict(images_per_digit=2.5), "Images per digit: expected an integer from 1 to 8, got 2.5."),
    ],
)
def test_a_bad_generate_value_is_an_error_that_says_what_to_fix(client, bad, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as error:
        client.predict(**{**GENERATE, **bad}, api_name="/generate")
    assert str(error.value) == message


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(seed=None), "Seed: expected an integer from 0 to 18446744073709551615, got None."),
        (dict(guidance_scale=None), "Guidance scale: expected a finite number from 0 to 6, got None."),
        (dict(completions=None), "Completions: expected an integer from 1 to 8, got None."),
        (dict(completions=9), "Completions: expected an integer from 1 to 8, got 9."),
    ],
)
def test_a_bad_inpaint_value_is_an_error_that_says_what_to_fix(client, half_digit, bad, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as error:
        client.predict(half_digit[1], **{**COMPLETE, **bad}, api_name="/complete")
    assert str(error.value) == message


def test_what_the_pipeline_refuses_is_shown_as_its_message(client, half_digit):
    # The model knows the digits 0–7: the pipeline refuses a 9 with a ValueError, which both tabs show as it is.
    from gradio_client.exceptions import AppError

    for call in (lambda: client.predict(**{**GENERATE, "digits": ["9"]}, api_name="/generate"),
                 lambda: client.predict(half_digit[1], **{**COMPLETE, "digit": "9"}, api_name="/complete")):
        with pytest.raises(AppError) as error:
            call()
        assert RAW_EXCEPTION not in str(error.value) and "9" in str(error.value)


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


def test_inpaint_completes_an_uploaded_half_digit(browser, demo_url, half_digit):
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    page = browser.new_page()
    page.goto(demo_url)
    page.get_by_role("tab", name="Inpaint").click()
    prompt = page.locator("#drawing").get_by_text("Upload an image")
    shown = "() => { const i = document.querySelector('#completions img'); return i && i.naturalWidth > 0; }"
    # Upload as a visitor does, through the editor's own file chooser: setting the hidden file input directly can land
    # before the editor listens to it and is then lost (it failed every retry in a CI run). The editor loads the upload
    # as its background in its own time (seconds on a cold browser); a click before that sends no drawing and gets the
    # "draw or upload" error, so upload again while the editor still asks for one, and click until completions arrive.
    for attempt in range(6):
        if prompt.is_visible():
            with page.expect_file_chooser() as chooser:
                prompt.click()
            chooser.value.set_files(str(half_digit[0]))
        page.wait_for_timeout(1000)
        page.locator("#complete").click()
        try:
            page.wait_for_function(shown, timeout=20_000)
            break
        except PlaywrightTimeoutError:
            if attempt == 5:
                raise
    width, height = page.evaluate("() => { const i = document.querySelector('#completions img'); "
                                  "return [i.naturalWidth, i.naturalHeight]; }")
    columns, rows = (width // SCALE - 2) / 30, (height // SCALE - 2) / 30
    assert (rows, columns) == (1, 4), (width, height)  # 4 completions (the default), one row
    page.close()
