#!/usr/bin/env python
"""Score generated digits with the evaluation classifier: accuracy (overall and per digit) and Fréchet distance
against the real floor, for one or several samplers and guidance scales.

    python scripts/evaluate.py --data_dir ../shared/data/mnist --samplers ddpm --samples_per_digit 50 --output results.json
    python scripts/evaluate.py --data_dir ../shared/data/mnist --samplers dpm --guidance_scales 1 1.5 2 3 4 --samples_per_digit 500
"""

from mnist_diffusion.lab.evaluation import main

if __name__ == "__main__":
    main()
