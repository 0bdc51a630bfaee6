"""Training: the three jobs of the project and the pieces they share.

- `ddpm.py`: the class-conditional DDPM (`scripts/train.py`), the spec's algorithm in `ddpm_loss` and `train`;
- `distillation.py`: its consistency-distilled few-step student (`scripts/distill.py`);
- `classifier.py`: the evaluation classifier (`scripts/train_classifier.py`);
- `loop.py`: what every loop is made of (accelerator, seeding, data and length, the optimiser step, the time budget,
  logs, validation grids, the run record, the final save and push);
- `checkpoints.py`: checkpoints that survive a kill, their checks, resume and roll-back, the output folder;
- `options.py`: the option groups the jobs share, and their checks.
"""
