#!/usr/bin/env python
"""Train the evaluation classifier (a transformers RegNet) on MNIST and save it with its image processor.

    accelerate launch scripts/train_classifier.py --data_dir ../shared/data/mnist --output_dir pretrained/mnist-classifier

Every option and its default: `python scripts/train_classifier.py --help`. The training loop is in
`mnist_diffusion/lab/training/classifier.py`.
"""

from mnist_diffusion.lab.training.classifier import main

if __name__ == "__main__":
    main()
