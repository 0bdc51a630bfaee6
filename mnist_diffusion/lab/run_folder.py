"""The layout of a training run's output folder, which training writes, the card reads and the Hub push filters:

    run/
    ├── model_index.json, unet/, scheduler/   the pipeline, loadable with `MNISTDDPMPipeline.from_pretrained("run")`
    ├── training_config.json                  the run record: command, options, data, steps, wall time
    ├── checkpoints/checkpoint-N/             resumable state
    ├── logs/                                 TensorBoard
    └── samples/step-N.png                    validation grids
"""

TRAINING_CONFIG = "training_config.json"
# The pipeline with its run record, written together (training's `write_pipeline` swaps each in by rename).
PIPELINE_ENTRIES = ("model_index.json", "unet", "scheduler", TRAINING_CONFIG)
# Training by-products beside the pipeline; none of them is ever pushed to the Hub.
CHECKPOINTS, LOGS, SAMPLES = "checkpoints", "logs", "samples"
BY_PRODUCTS = (CHECKPOINTS, LOGS, SAMPLES)
RUN_ENTRIES = {*PIPELINE_ENTRIES, *BY_PRODUCTS}
