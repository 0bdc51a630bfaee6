#!/usr/bin/env python
"""Distil the shipped DDPM into a few-step student that samples with diffusers' LCMScheduler.

    accelerate launch scripts/distill.py --teacher pretrained/mnist-ddpm --data_dir ../shared/data/mnist \
        --output_dir mnist-lcm

Every option and its default: `python scripts/distill.py --help`. The method is in `mnist_diffusion/lab/training/distillation.py`.
"""

from mnist_diffusion.lab.training.distillation import main

if __name__ == "__main__":
    main()
