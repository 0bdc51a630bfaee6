"""`benchmarks/benchmark.py`: the committed report is its template filled from the committed results (the benchmark
itself runs in `.ci/run`'s quick mode)."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import benchmark  # noqa: E402


def test_the_committed_results_md_is_the_rendering_of_the_committed_results_json():
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text(encoding="utf-8"))
    rendered = benchmark.render_markdown(results, benchmark.Settings(**results["settings"]))
    assert rendered == (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8"), (
        "benchmarks/RESULTS.md is out of date: python benchmarks/benchmark.py --render benchmarks/results.json"
    )
