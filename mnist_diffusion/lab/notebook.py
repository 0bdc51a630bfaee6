"""Execute a notebook (docs/tutorial.ipynb) and check that its committed outputs come from its committed code.

A notebook is run top to bottom by nbclient in a fresh `python3` kernel whose working directory is the repository root,
and written back with each code cell's metadata holding the sha256 of the source that produced its outputs
(`cell.metadata["mnist_diffusion"]["source_sha256"]`). A cell edited afterwards no longer matches its hash, and
[`stale_cells`] names it: the outputs a reader sees on GitHub or the Hub are those of the code beside them.
"""

import argparse
import hashlib
import os
import stat
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parents[2]  # mnist_diffusion/lab/notebook.py → the checkout
# The metadata entry, in each code cell and in the notebook, that this module writes and checks.
METADATA_KEY = "mnist_diffusion"
# "1" in the kernel's environment: the notebook shrinks every expensive setting (its first code cell reads it).
QUICK_ENV = "MNIST_TUTORIAL_QUICK"


def source_sha256(source: str) -> str:
    """The sha256 of a cell's source, as UTF-8."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def execute_notebook(path: str | os.PathLike, output: str | os.PathLike | None = None, quick: bool = False,
                     timeout: int | None = None) -> nbformat.NotebookNode:
    """
    Run a notebook top to bottom and write it, with its outputs and the hash of each code cell's source, to `output`.

    Args:
        path: the notebook.
        output: where the executed notebook goes (default: `path` itself), written atomically: a run that fails
            leaves the file as it was.
        quick: run with `MNIST_TUTORIAL_QUICK=1` in the kernel's environment, which the tutorial reads to shrink its
            expensive settings; recorded in the notebook's metadata.
        timeout: seconds one cell may run (None: no limit).

    Returns:
        `nbformat.NotebookNode`: the executed notebook.

    Raises:
        `nbclient.exceptions.CellExecutionError`: a cell raised; the message names the cell and holds its traceback.
    """
    notebook = nbformat.read(path, as_version=4)
    hashes = [source_sha256(cell.source) for cell in notebook.cells if cell.cell_type == "code"]
    client = NotebookClient(notebook, kernel_name="python3", timeout=timeout, record_timing=False,
                            resources={"metadata": {"path": str(REPO_ROOT)}})
    client.execute(env={**os.environ, QUICK_ENV: "1" if quick else "0"})
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell, digest in zip(code_cells, hashes):  # the source as it ran, hashed before the run
        cell.metadata[METADATA_KEY] = {"source_sha256": digest}
    notebook.metadata[METADATA_KEY] = {"quick": quick}
    write_atomically(notebook, Path(output or path))
    return notebook


def write_atomically(notebook: nbformat.NotebookNode, path: Path) -> None:
    """Write `notebook` to a temporary file beside `path`, then rename it over `path`, keeping `path`'s permissions
    (those of a new file when there is none: mkstemp's are the owner's alone)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            nbformat.write(notebook, file)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~umask)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def stale_cells(notebook: nbformat.NotebookNode) -> list[str]:
    """
    The code cells whose outputs were not produced by their current source, each named by its number among the code
    cells and its first line, with why: never run, run with no recorded hash, edited after it ran, or run out of
    order (execution counts must be 1, 2, 3, … down the notebook, as in one run from the top). A cell may have no
    outputs; it must still have run.

    Returns:
        `list[str]`: one line per stale cell; empty when every output comes from the code beside it.
    """
    problems = []
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for number, cell in enumerate(code_cells, start=1):
        first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else "(empty)"
        name = f"code cell {number} ({first_line!r})"
        stored = cell.metadata.get(METADATA_KEY, {}).get("source_sha256")
        if cell.execution_count is None:
            problems.append(f"{name} has not run")
        elif cell.execution_count != number:
            problems.append(f"{name} ran as execution {cell.execution_count}, not {number}: not one run from the top")
        if stored is None:
            problems.append(f"{name} has no recorded source hash: run the notebook with scripts/run_notebook.py")
        elif stored != source_sha256(cell.source):
            problems.append(f"{name} was edited after it ran: its outputs are those of another source")
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="run_notebook.py",
        description="Execute a notebook top to bottom (cwd: the repository root) and write it back with its outputs, "
                    "each code cell stamped with the sha256 of its source; or check a committed notebook.",
    )
    parser.add_argument("notebook", type=Path, help="The notebook, e.g. docs/tutorial.ipynb.")
    parser.add_argument("--quick", action="store_true",
                        help=f"Run in quick mode ({QUICK_ENV}=1): every expensive setting shrunk, as CI runs it.")
    parser.add_argument("--output", type=Path, default=None,
                        help="Where the executed notebook goes (default: over NOTEBOOK).")
    parser.add_argument("--check", action="store_true",
                        help="Execute nothing: exit 1 naming every code cell whose outputs do not come from its "
                             "current source.")
    args = parser.parse_args(argv)
    if not args.notebook.is_file():
        parser.error(f"{args.notebook} is not a file")
    if args.check:
        problems = stale_cells(nbformat.read(args.notebook, as_version=4))
        print("\n".join(problems) or f"{args.notebook}: every code cell's outputs come from its current source")
        sys.exit(1 if problems else 0)
    execute_notebook(args.notebook, args.output, quick=args.quick)
    print(f"Executed {args.notebook} ({'quick' if args.quick else 'full'} mode) into {args.output or args.notebook}")
