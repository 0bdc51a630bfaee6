#!/usr/bin/env python
"""Measure the model as a likelihood model on real test digits: its variational bound in bits per dimension
(conditional and unconditional) and its zero-shot accuracy as a classifier against the trials per class.

    python scripts/evaluate_likelihood.py --data_dir ../shared/data/mnist --cache_dir out/likelihood-cache \
        --output pretrained/mnist-ddpm/evaluation/likelihood.json
"""

from mnist_diffusion.lab.likelihood_evaluation import main

if __name__ == "__main__":
    main()
