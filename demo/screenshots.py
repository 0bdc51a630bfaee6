"""Take the README's screenshots of the demo's two tabs, in headless Chromium (Debian's package, driven by Playwright).

    python demo/screenshots.py --model pretrained/mnist-ddpm
"""

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent
DIGIT = 3  # the Inpaint tab's preselected label: the screenshot completes the top half of a real 3 as a 3
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def start_demo(model: str, port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, str(HERE / "app.py"), "--model", model, "--port", str(port)],
                              env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    for _ in range(240):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("the demo did not start")


def half_digit(data_dir: str, digit: int) -> Path:
    """The first test digit of class `digit`, its bottom half blacked out, 10× upscaled, as a PNG in a temp folder."""
    import tempfile

    from PIL import Image

    from mnist_diffusion.data import load_mnist

    images, labels = load_mnist(data_dir, "test")
    pixels = images[(labels == digit).nonzero()[0, 0]].numpy().copy()
    pixels[14:] = 0
    path = Path(tempfile.mkdtemp(prefix="mnist-demo-")) / f"top-half-of-a-{digit}.png"
    Image.fromarray(pixels, mode="L").resize((280, 280), Image.NEAREST).save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(HERE.parent / "pretrained" / "mnist-ddpm"))
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--data_dir", default=str(HERE.parents[1] / "shared" / "data" / "mnist"),
                        help="MNIST IDX files: the Inpaint screenshot completes the top half of a real test digit.")
    args = parser.parse_args()
    server = start_demo(args.model, args.port)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"http://127.0.0.1:{args.port}")
            for digit in "0123456789":
                page.get_by_label(digit, exact=True).check()
            page.locator("#generate").click()
            page.wait_for_function("() => { const i = document.querySelector('#grid img'); return i && i.naturalWidth; }",
                                   timeout=300_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(HERE / "screenshot-generate.png"), full_page=True)

            page.get_by_role("tab", name="Inpaint").click()
            # Upload the top half of a real test digit (the sketchpad takes uploads as well as strokes).
            page.locator("#drawing input[type=file]").set_input_files(str(half_digit(args.data_dir, DIGIT)))
            page.wait_for_timeout(1500)
            page.locator("#complete").click()
            page.wait_for_function(
                "() => { const i = document.querySelector('#completions img'); return i && i.naturalWidth; }",
                timeout=300_000,
            )
            page.wait_for_timeout(1000)
            page.screenshot(path=str(HERE / "screenshot-inpaint.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"Screenshots written to {HERE}")


if __name__ == "__main__":
    main()
