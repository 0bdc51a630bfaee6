#!/usr/bin/env python
"""Generate handwritten digits with the shipped model (or any pipeline folder or Hub repo id).

    python scripts/generate.py --labels 7
    python scripts/generate.py --labels 0 1 2 3 4 5 6 7 8 9 --num_images_per_label 8 --scheduler dpm --output grid.png
"""

from mnist_diffusion.lab.generate import main

if __name__ == "__main__":
    main()
