#!/usr/bin/env python
"""Train a class-conditional DDPM on MNIST.

    accelerate launch scripts/train.py --data_dir ../shared/data/mnist --output_dir mnist-ddpm

Every option and its default: `python scripts/train.py --help`. The training loop is in
`mnist_diffusion/lab/training/ddpm.py`.
"""

from mnist_diffusion.lab.training.ddpm import main

if __name__ == "__main__":
    main()
