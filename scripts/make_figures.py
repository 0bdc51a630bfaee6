#!/usr/bin/env python
"""Make the README's and the model card's figures from the shipped model, with fixed seeds.

    python scripts/make_figures.py --data_dir ../shared/data/mnist --sweep pretrained/mnist-ddpm/evaluation/guidance_sweep.json
"""

from mnist_diffusion.lab.figures import main

if __name__ == "__main__":
    main()
