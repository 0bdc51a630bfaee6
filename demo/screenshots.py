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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(HERE.parent / "pretrained" / "mnist-ddpm"))
    parser.add_argument("--port", type=int, default=7861)
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
            canvas = page.locator("canvas").first
            canvas.wait_for(state="visible")
            box = canvas.bounding_box()
            # The top of a 3: an arc and the start of the middle stroke; the model draws the bottom half.
            stroke = [(0.3, 0.25), (0.45, 0.15), (0.6, 0.18), (0.66, 0.3), (0.58, 0.42), (0.45, 0.48)]
            page.mouse.move(box["x"] + stroke[0][0] * box["width"], box["y"] + stroke[0][1] * box["height"])
            page.mouse.down()
            for x, y in stroke[1:]:
                page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
            page.mouse.up()
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
