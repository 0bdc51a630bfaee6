# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""
The guidance search's table: evaluations of the shipped model at n = 5,000 with classifier-free guidance, diffusers'
guiders, autoguidance by weaker UNets and the samplers (each written by `scripts/evaluate.py`, same classifier, n and
seed), collected into one JSON and one Markdown table (docs/generation.md, "Which guidance"); with `--store_default`,
the rule of docs/evaluation.md picks the default among the step-independent guiders and it is written into the model
folder (scale, interval, guider and guidance UNet):

    python benchmarks/guidance.py --evaluations CFG=runs/final/cfg.json "AG 16-32-48 @2000"=runs/final/ag.json \
        --output benchmarks/guidance.json --store_default pretrained/mnist-ddpm
"""

import argparse
import json
from pathlib import Path

from mnist_diffusion.lab.evaluation.guidance_search import (apply_timings, build_table, choose_from_table,
                                                            read_evaluations, store_guidance, time_settings)
from mnist_diffusion.lab.evaluation.sampling import SetupError
from mnist_diffusion.lab.reporting import guidance_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--evaluations", nargs="+", required=True,
                        help="NAME=PATH pairs: each results JSON of scripts/evaluate.py and the name of its guidance.")
    parser.add_argument("--output", default="benchmarks/guidance.json", help="Where to write the table's JSON.")
    parser.add_argument("--timing_repeats", type=int, default=0,
                        help="Time every setting side by side (this many interleaved rounds of 100 digits) for the "
                             "cost column, instead of the evaluations' wall times; run it with nothing else running.")
    parser.add_argument("--store_default", default=None, metavar="MODEL_DIR",
                        help="Apply the rule and write the chosen guidance into this pipeline folder.")
    args = parser.parse_args(argv)
    if args.store_default is not None and not (Path(args.store_default) / "model_index.json").is_file():
        parser.error(f"--store_default {args.store_default} is not a pipeline folder (it has no model_index.json)")
    try:
        table = build_table(read_evaluations(args.evaluations))
        chosen = choose_from_table(table)
    except (SetupError, ValueError) as error:
        parser.error(str(error))
    if args.timing_repeats > 0:
        apply_timings(table, time_settings(table, repeats=args.timing_repeats))
    temporary = Path(args.output).with_name(Path(args.output).name + ".tmp")
    temporary.write_text(json.dumps(table, indent=2) + "\n")
    temporary.replace(args.output)
    if args.store_default is not None:
        store_guidance(args.store_default, table, chosen)
        print(f"Stored {chosen['source']} at {chosen['guidance_scale']} as the default of {args.store_default}")
    print(guidance_table(table))


if __name__ == "__main__":
    main()
