"""Training: the three jobs of the project and the pieces they share.

- `ddpm.py`: the class-conditional DDPM (`scripts/train.py`): the spec's algorithm in `ddpm_loss` and the loop of
  `train`;
- `distillation.py`: its consistency-distilled few-step student (`scripts/distill.py`), its own loop in `distill`;
- `classifier.py`: the evaluation classifier (`scripts/train_classifier.py`), its own short loop;
- `loop.py`: what every loop is made of (accelerator, seeding, data and length, the optimiser step, the time budget,
  logs, validation grids, the final save and push); `start_run` sets up a run of `train.py` or `distill.py`, and
  its `Run` ends each step and the run;
- `record.py`: the run record and the pipeline written whole;
- `checkpoints.py`: checkpoints that survive a kill, their checks, resume and roll-back, the output folder;
- `options.py`: the option groups the jobs share, and their checks.
"""
