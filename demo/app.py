"""A Gradio demo of the class-conditional MNIST DDPM: generate digits, or draw half a digit and let the model finish it.

    python demo/app.py                       # the shipped models, on http://127.0.0.1:7860
    python demo/app.py --model org/mnist-ddpm --student org/mnist-lcm

The folder deploys as a Hugging Face Space as it is (see README.md here).
"""

import argparse
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler
from PIL import Image

from mnist_diffusion import MNISTDDPMInpaintPipeline, MNISTDDPMPipeline, MNISTDDPMScheduler
from mnist_diffusion.images import make_grid
from mnist_diffusion.lab.arguments import MAX_SEED, check_number
# The inpainting settings the evaluation measured.
from mnist_diffusion.lab.inpainting_evaluation import INPAINT_JUMP_LENGTH, INPAINT_JUMP_N_SAMPLE, INPAINT_STEPS
from mnist_diffusion.lab.shipped import SHIPPED_MODEL, SHIPPED_STUDENT

DEFAULT_MODEL = str(SHIPPED_MODEL) if SHIPPED_MODEL.is_dir() else "org/mnist-ddpm"
DEFAULT_STUDENT = str(SHIPPED_STUDENT) if SHIPPED_STUDENT.is_dir() else "org/mnist-lcm"
DISTILLED = "Distilled student (fastest)"
FAST, FULL = "DPM-Solver++ (fast)", "DDPM, 1000 steps (the paper's sampler)"
# Limits that keep one visitor from holding the CPU for minutes.
MAX_IMAGES = {DISTILLED: 80, FAST: 40, FULL: 10}
MAX_COMPLETIONS = 8
# The ranges of the form's sliders, which the handlers also enforce: values reach them unchecked through the API.
IMAGES_PER_DIGIT = (1, 8)
GUIDANCE_SCALES = (0, 6)
FAST_STEPS = (20, 50)
REGIONS = ("bottom half", "top half", "left half", "right half", "everything not drawn")
SCALE = 8  # 28×28 digits are specks on a page: show them upscaled, nearest-neighbour


def unchecked(slider: gr.Slider) -> gr.Slider:
    """
    `slider`, passing its value to the handler as it arrives. gr.Slider's own check fails on an emptied number box
    (None) with a bare TypeError, which the visitor sees as "raised an exception"; the handlers check every value with
    [`form_number`] instead, which names the field and what to enter. (An instance attribute, not a subclass: Gradio
    writes a .pyi file beside the module of every component subclass.)
    """
    slider.preprocess = lambda payload: payload
    return slider


def form_number(value, label: str, minimum: float, maximum: float, *, integer: bool = False) -> int | float:
    """The value of the form field `label`, or a `gr.Error` that names the field and what to enter in it."""
    try:
        return check_number(value, minimum, maximum, integer=integer)
    except ValueError as error:
        raise gr.Error(f"{label}: {error}.") from None


class Demo:
    """The demo's two actions, on one loaded model; separate from the UI so that tests can call them directly."""

    def __init__(self, model: str, student: str | None = None):
        self.pipe = MNISTDDPMPipeline.from_pretrained(model)
        # The consistency-distilled student, which samples with its own LCMScheduler and has its guidance baked in.
        self.student = MNISTDDPMPipeline.from_pretrained(student) if student else None
        self.samplers = [DISTILLED, FAST, FULL] if self.student is not None else [FAST, FULL]
        # What the radio shows: the student's stored number of steps beside its name.
        student_steps = self.student.resolve_defaults()[0] if self.student is not None else None
        self.sampler_choices = [(f"Distilled student, {student_steps} step{'s' * (student_steps != 1)} (fastest)"
                                 if sampler == DISTILLED else sampler, sampler) for sampler in self.samplers]
        # The paper's chain is the DDPM of the model's noise schedule; the fast sampler is the one the model stores when
        # it stores a solver (the rule of docs/evaluation.md picks it), else DPM-Solver++ built from its config.
        own = self.pipe.scheduler
        stores_ddpm = isinstance(own, MNISTDDPMScheduler)
        self.full_scheduler = own if stores_ddpm else MNISTDDPMScheduler.from_config(own.config)
        self.fast_scheduler = DPMSolverMultistepScheduler.from_config(own.config) if stores_ddpm else own
        self.inpaint = MNISTDDPMInpaintPipeline(**self.pipe.components)
        for pipe in (self.pipe, self.inpaint, self.student):
            pipe.set_progress_bar_config(disable=True)  # progress shows on the page instead
        self.default_guidance = self.pipe.config.default_guidance_scale

    def generate(self, digits, images_per_digit, guidance_scale, sampler, fast_steps, seed, progress=gr.Progress()):
        """Returns the grid (one row per digit) and the path of a GIF of the denoising."""
        digits = sorted(int(d) for d in digits or [])
        if not digits:
            raise gr.Error("Pick at least one digit.")
        images_per_digit = form_number(images_per_digit, "Images per digit", *IMAGES_PER_DIGIT, integer=True)
        guidance_scale = form_number(guidance_scale, "Guidance scale", *GUIDANCE_SCALES)
        seed = form_number(seed, "Seed", 0, MAX_SEED, integer=True)
        count = len(digits) * images_per_digit
        if count > MAX_IMAGES[sampler]:
            raise gr.Error(f"{count} images is too many for {sampler}: at most {MAX_IMAGES[sampler]} per request.")
        if sampler not in self.samplers:
            raise gr.Error(f"Unknown sampler {sampler!r}: choose one of {self.samplers}.")
        pipe = self.student if sampler == DISTILLED else self.pipe
        if sampler == DISTILLED:
            steps, guidance_scale, _ = pipe.resolve_defaults()  # its own steps; the guidance is in its weights
        elif sampler == FAST:
            pipe.scheduler = self.fast_scheduler
            steps = form_number(fast_steps, "Solver steps", *FAST_STEPS, integer=True)
        else:
            pipe.scheduler = self.full_scheduler
            steps = self.full_scheduler.config.num_train_timesteps
        frames = []

        def record(pipe, i, t, tensors):
            progress((i + 1, steps), desc="denoising")
            if i % max(1, steps // 25) == 0 or i == steps - 1:
                frames.append(tensors["latents"].clone())
            return tensors

        try:
            images = pipe(
                labels=digits, num_images_per_label=images_per_digit, num_inference_steps=steps,
                guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed),
                callback_on_step_end=record,
            ).images
        except ValueError as error:  # what the model refuses, e.g. a digit it was not trained on
            raise gr.Error(str(error)) from error
        grid = make_grid(images, rows=len(digits), scale=SCALE, row_labels=[str(d) for d in digits])
        return grid, self.animation(frames, rows=len(digits))

    def animation(self, frames: list[torch.Tensor], rows: int) -> str:
        pictures = [make_grid(self.pipe.numpy_to_pil(self.pipe.postprocess(f, "np")), rows=rows, scale=SCALE // 2)
                    for f in frames]
        path = Path(tempfile.mkdtemp(prefix="mnist-ddpm-demo-")) / "denoising.gif"
        pictures[0].save(path, save_all=True, append_images=pictures[1:] + [pictures[-1]] * 10, duration=80, loop=0)
        return str(path)

    def complete(self, drawing, digit, region, completions, guidance_scale, seed, progress=gr.Progress()):
        """Finish a partial digit: returns the masked input and a grid of completions."""
        completions = form_number(completions, "Completions", 1, MAX_COMPLETIONS, integer=True)
        guidance_scale = form_number(guidance_scale, "Guidance scale", *GUIDANCE_SCALES)
        seed = form_number(seed, "Seed", 0, MAX_SEED, integer=True)
        partial = to_digit(drawing)
        mask = region_mask(region, partial)

        def report(pipe, i, t, tensors):
            progress(None, desc="completing")
            return tensors

        try:
            images = self.inpaint(
                partial, mask, labels=[int(digit)], num_images_per_label=completions,
                num_inference_steps=INPAINT_STEPS, jump_length=INPAINT_JUMP_LENGTH, jump_n_sample=INPAINT_JUMP_N_SAMPLE,
                guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed),
                callback_on_step_end=report,
            ).images
        except ValueError as error:
            raise gr.Error(str(error)) from error
        shown = Image.fromarray(np.where(np.asarray(mask) > 127, 60, np.asarray(partial)).astype(np.uint8), mode="L")
        return shown.resize((28 * SCALE, 28 * SCALE), Image.NEAREST), make_grid(images, rows=1, scale=SCALE)


def to_digit(drawing) -> Image.Image:
    """A sketchpad drawing or an uploaded picture as a 28×28 white-on-black digit."""
    if isinstance(drawing, dict):  # the sketchpad's value: background, layers and their composite
        drawing = drawing.get("composite")
    if drawing is None:
        raise gr.Error("Draw or upload part of a digit first.")
    image = drawing if isinstance(drawing, Image.Image) else Image.fromarray(np.asarray(drawing))
    alpha = np.asarray(image.getchannel("A")) if image.mode in ("RGBA", "LA") else None
    if alpha is not None and alpha.min() < 255:  # strokes on a transparent canvas: the alpha channel is the ink
        pixels = alpha
    else:
        pixels = np.asarray(image.convert("L"))
        if pixels.mean() > 127:  # dark ink on a light background: invert to MNIST's white on black
            pixels = 255 - pixels
    return Image.fromarray(pixels.astype(np.uint8), mode="L").resize((28, 28), Image.BILINEAR)


def region_mask(region: str, partial: Image.Image) -> Image.Image:
    """White where the model is to draw."""
    mask = np.zeros((28, 28), dtype=np.uint8)
    if region == "bottom half":
        mask[14:] = 255
    elif region == "top half":
        mask[:14] = 255
    elif region == "left half":
        mask[:, :14] = 255
    elif region == "right half":
        mask[:, 14:] = 255
    elif region == "everything not drawn":
        mask[np.asarray(partial) < 32] = 255
    else:
        raise gr.Error(f"Unknown region {region!r}; choose one of {', '.join(REGIONS)}.")
    return Image.fromarray(mask, mode="L")


def build_ui(demo: Demo) -> gr.Blocks:
    with gr.Blocks(title="MNIST DDPM") as ui:
        gr.Markdown("# Class-conditional MNIST diffusion\nAsk for digits, or draw part of one and let the model finish it.")
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column():
                    digits = gr.CheckboxGroup([str(d) for d in range(10)], value=["7"], label="Digits")
                    per_digit = unchecked(gr.Slider(*IMAGES_PER_DIGIT, value=4, step=1, label="Images per digit"))
                    guidance = unchecked(gr.Slider(*GUIDANCE_SCALES, value=demo.default_guidance, step=0.25,
                                                   label="Guidance scale"))
                    sampler = gr.Radio(demo.sampler_choices, value=demo.samplers[0], label="Sampler",
                                       info="The distilled student has its guidance baked in: the slider above "
                                            "applies to the other two." if demo.student is not None else None)
                    steps = unchecked(gr.Slider(*FAST_STEPS, value=20, step=1, label="Solver steps (fast sampler)"))
                    seed = gr.Number(0, precision=0, label="Seed")
                    button = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column():
                    grid = gr.Image(label="Digits", type="pil", elem_id="grid")
                    movie = gr.Image(label="Denoising: static → blur → shape → digit", type="filepath")
            button.click(demo.generate, [digits, per_digit, guidance, sampler, steps, seed], [grid, movie])
        with gr.Tab("Inpaint"):
            with gr.Row():
                with gr.Column():
                    drawing = gr.Sketchpad(label="Draw part of a digit (or upload one)", type="pil",
                                           canvas_size=(280, 280), sources=["upload"], elem_id="drawing",
                                           brush=gr.Brush(default_size=22, colors=["#000000"], color_mode="fixed"))
                    digit = gr.Dropdown([str(d) for d in range(10)], value="3", label="Complete it as", elem_id="digit")
                    region = gr.Radio(list(REGIONS), value="bottom half", label="Region the model draws")
                    completions = unchecked(gr.Slider(1, MAX_COMPLETIONS, value=4, step=1, label="Completions"))
                    guidance_inpaint = unchecked(gr.Slider(*GUIDANCE_SCALES, value=demo.default_guidance, step=0.25,
                                                           label="Guidance scale"))
                    seed_inpaint = gr.Number(0, precision=0, label="Seed")
                    complete = gr.Button("Complete", variant="primary", elem_id="complete")
                with gr.Column():
                    masked = gr.Image(label="Your digit (grey: to be drawn)", type="pil")
                    completed = gr.Image(label="Completions", type="pil", elem_id="completions")
            complete.click(demo.complete, [drawing, digit, region, completions, guidance_inpaint, seed_inpaint],
                           [masked, completed])
    return ui


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="Pipeline folder or Hub repo id.")
    parser.add_argument("--student", default=DEFAULT_STUDENT,
                        help="Folder or Hub repo id of the consistency-distilled student (the fastest sampler), or "
                             "'none' to offer the two samplers of --model only.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    build_ui(Demo(args.model, None if args.student == "none" else args.student)).queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
