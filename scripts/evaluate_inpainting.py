#!/usr/bin/env python
"""Measure class-conditional inpainting: hide the bottom half of real test digits, complete them as their own class
and as another, and report how often the evaluation classifier reads the requested digit and whether kept pixels moved.

    python scripts/evaluate_inpainting.py --data_dir ../shared/data/mnist --output pretrained/mnist-ddpm/evaluation/inpainting.json
"""

from mnist_diffusion.lab.inpainting_evaluation import main

if __name__ == "__main__":
    main()
