#!/usr/bin/env python
"""Write the UNet of a scripts/train.py checkpoint (its EMA weights at that step) as a model folder.

    python scripts/export_checkpoint.py --checkpoint runs/guide/checkpoints/checkpoint-2000 --output_dir guides/2000

The code is in `mnist_diffusion/lab/training/export.py`.
"""

from mnist_diffusion.lab.training.export import main

if __name__ == "__main__":
    main()
