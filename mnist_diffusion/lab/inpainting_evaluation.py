"""How well the model completes a digit: the bottom half of real test digits hidden and regenerated with RePaint
(`MNISTDDPMInpaintPipeline`), as their own class and as another, scored by the evaluation classifier, with the kept
pixels compared to the originals. Behind `scripts/evaluate_inpainting.py`; the figure and the demo use its settings.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from ..data import load_mnist
from .evaluation import accuracy_report
from .reporting import inpainting_table
from .shipped import SHIPPED_CLASSIFIER, SHIPPED_MODEL

# RePaint settings of the inpainting measurement and figure, sized for a 2-core CPU: 50 levels, each stretch of 5
# denoised twice (≈ 95 model calls instead of the pipeline's default 250 × 5).
INPAINT_STEPS, INPAINT_JUMP_LENGTH, INPAINT_JUMP_N_SAMPLE = 50, 5, 2


def bottom_half_task(images: torch.Tensor, labels: torch.Tensor, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The inpainting task of the measurement and the figure: the indices of the first `per_class` test digits of each
    class 0–9 (in class order), and the mask that regenerates their bottom half (rows 14–27).
    """
    chosen = torch.cat([(labels == digit).nonzero()[:per_class, 0] for digit in range(10)])
    mask = torch.zeros(images.shape[-2:])
    mask[images.shape[-2] // 2 :] = 1
    return chosen, mask


def evaluate_inpainting(model_dir: str, classifier_dir: str, data_dir: str, per_class: int = 100,
                        num_inference_steps: int = INPAINT_STEPS, jump_length: int = INPAINT_JUMP_LENGTH,
                        jump_n_sample: int = INPAINT_JUMP_N_SAMPLE, guidance_scale: float | None = None,
                        batch_size: int = 250, seed: int = 0) -> dict:
    """
    Hide the bottom half of `per_class` real test digits of each class and complete them twice: as their true class,
    and as another class (the next digit, (y + 1) mod 10). The classifier says how often a completion is read as the
    requested digit; the kept top half is compared with the original pixel for pixel.

    Returns:
        A dict with the settings, accuracy for the true and for the other label (overall and per digit), the largest
        change of a kept pixel (0–255), and the wall time.
    """
    from ..pipeline_mnist_inpaint import MNISTDDPMInpaintPipeline
    from .classifier import DigitClassifier

    classifier = DigitClassifier.from_pretrained(classifier_dir)
    pipe = MNISTDDPMInpaintPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    images, labels = load_mnist(data_dir, "test")
    chosen, mask = bottom_half_task(images, labels, per_class)
    report = {"per_class": per_class, "num_inference_steps": num_inference_steps, "jump_length": jump_length,
              "jump_n_sample": jump_n_sample,
              "guidance_scale": pipe.config.default_guidance_scale if guidance_scale is None else guidance_scale,
              "mask": f"bottom half (rows {int(mask.nonzero()[0, 0])}-{mask.shape[0] - 1}) regenerated", "seed": seed}
    started = time.perf_counter()
    max_kept_change = 0
    for name, shift in (("true_label", 0), ("other_label", 1)):
        requested = (labels[chosen] + shift) % 10
        completions = []
        for start in range(0, len(chosen), batch_size):
            batch = chosen[start : start + batch_size]
            completions.append(pipe(images[batch][:, None], mask, labels=requested[start : start + batch_size],
                                    num_inference_steps=num_inference_steps, jump_length=jump_length,
                                    jump_n_sample=jump_n_sample, guidance_scale=guidance_scale,
                                    generator=torch.Generator().manual_seed(seed + start), output_type="pt").images)
        completions = torch.cat(completions)
        kept = mask == 0
        change = (completions[:, 0] * 255).round()[:, kept] - images[chosen].float()[:, kept]
        max_kept_change = max(max_kept_change, int(change.abs().max()))
        report[name] = accuracy_report(classifier.predict(completions), requested)
    report["max_kept_pixel_change"] = max_kept_change
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="evaluate_inpainting.py",
        description="Complete real test digits whose bottom half is hidden, as their own and as another class, and "
                    "score the completions with the evaluation classifier.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model_dir", default=str(SHIPPED_MODEL))
    parser.add_argument("--classifier_dir", default=str(SHIPPED_CLASSIFIER))
    parser.add_argument("--data_dir", default="data/mnist")
    parser.add_argument("--per_class", type=int, default=100, help="Test digits per class.")
    parser.add_argument("--num_inference_steps", type=int, default=INPAINT_STEPS)
    parser.add_argument("--jump_length", type=int, default=INPAINT_JUMP_LENGTH)
    parser.add_argument("--jump_n_sample", type=int, default=INPAINT_JUMP_N_SAMPLE)
    parser.add_argument("--guidance_scale", type=float, default=None)
    parser.add_argument("--batch_size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="inpainting.json")
    args = parser.parse_args(argv)
    report = evaluate_inpainting(args.model_dir, args.classifier_dir, args.data_dir, args.per_class,
                                 args.num_inference_steps, args.jump_length, args.jump_n_sample, args.guidance_scale,
                                 args.batch_size, args.seed)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(inpainting_table(report))
