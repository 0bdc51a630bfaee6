"""Tests of `mnist_diffusion/lab/notebook.py` and of the notebook it runs, docs/tutorial.ipynb: its committed outputs
come from its committed code, it runs top to bottom in its quick mode, and the check names a cell edited after it
ran."""

import copy
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

from mnist_diffusion.lab.notebook import (METADATA_KEY, REPO_ROOT, execute_notebook, main,  # noqa: E402
                                          source_sha256, stale_cells)

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def committed_tutorial() -> nbformat.NotebookNode:
    return nbformat.read(TUTORIAL, as_version=4)


def code_cells(notebook: nbformat.NotebookNode) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def outputs_of_type(notebook: nbformat.NotebookNode, output_type: str) -> list:
    return [output for cell in code_cells(notebook) for output in cell.outputs if output.output_type == output_type]


def figures(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {}) for cell in code_cells(notebook) for output in cell.outputs)


def test_the_committed_tutorial_shows_the_outputs_of_its_code_from_one_full_run():
    notebook = committed_tutorial()
    assert stale_cells(notebook) == []  # every code cell ran, in order from the top, with its current source
    assert [cell.execution_count for cell in code_cells(notebook)] == list(range(1, len(code_cells(notebook)) + 1))
    assert notebook.metadata[METADATA_KEY] == {"quick": False}  # the full run, not CI's quick one
    assert outputs_of_type(notebook, "error") == []
    assert figures(notebook) >= 15  # every part draws its figures; they render where the file is shown
    assert "QUICK = False" in "".join(output.get("text", "") for output in code_cells(notebook)[0].outputs)
    assert TUTORIAL.stat().st_size < 2_000_000


def test_the_check_names_a_cell_edited_after_it_ran():
    notebook = committed_tutorial()
    edited = copy.deepcopy(notebook)
    cell = code_cells(edited)[2]
    cell.source += "\nprint('one more line')"
    problems = stale_cells(edited)
    assert len(problems) == 1
    assert problems[0].startswith(f"code cell 3 ({cell.source.strip().splitlines()[0]!r})")
    assert "edited after it ran" in problems[0]


def test_the_check_names_cells_never_run_run_out_of_order_or_run_without_a_hash():
    notebook = committed_tutorial()
    cells = code_cells(notebook)
    cells[0].execution_count = None
    cells[1].execution_count, cells[2].execution_count = 3, 2
    del cells[4].metadata[METADATA_KEY]
    problems = stale_cells(notebook)
    assert len(problems) == 4
    assert problems[0].startswith("code cell 1 ") and "has not run" in problems[0]
    assert problems[1].startswith("code cell 2 ") and "ran as execution 3, not 2" in problems[1]
    assert problems[2].startswith("code cell 3 ") and "ran as execution 2, not 3" in problems[2]
    assert problems[3].startswith("code cell 5 ") and "no recorded source hash" in problems[3]


def test_the_command_line_check_exits_1_naming_the_edited_cell(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--check", str(TUTORIAL)])
    assert exit_info.value.code == 0
    notebook = committed_tutorial()
    code_cells(notebook)[1].source = "# changed\n" + code_cells(notebook)[1].source
    nbformat.write(notebook, tmp_path / "edited.ipynb")
    with pytest.raises(SystemExit) as exit_info:
        main(["--check", str(tmp_path / "edited.ipynb")])
    assert exit_info.value.code == 1
    assert "code cell 2 ('# changed') was edited after it ran" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing.ipynb")])
    assert exit_info.value.code == 2


def test_execution_stamps_each_cell_and_a_failing_cell_leaves_the_file_as_it_was(tmp_path):
    pytest.importorskip("ipykernel")
    from nbclient.exceptions import CellExecutionError

    path = tmp_path / "small.ipynb"
    source = "import os\nprint(os.environ['MNIST_TUTORIAL_QUICK'], os.getcwd())"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A"),
                                                   nbformat.v4.new_code_cell(source)]), path)
    notebook = execute_notebook(path, quick=True, timeout=120)
    assert notebook.cells[1].outputs[0].text == f"1 {REPO_ROOT}\n"  # quick mode, in the repository's root
    assert notebook.cells[1].metadata[METADATA_KEY] == {"source_sha256": source_sha256(source)}
    assert stale_cells(nbformat.read(path, as_version=4)) == []

    notebook.cells.append(nbformat.v4.new_code_cell("raise ValueError('a broken cell')"))
    nbformat.write(notebook, path)
    before = path.read_bytes()
    with pytest.raises(CellExecutionError, match="a broken cell"):
        execute_notebook(path, timeout=120)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["small.ipynb"]  # no temporary file left behind


def test_the_tutorial_runs_top_to_bottom_in_quick_mode(tmp_path):
    # The one slow test (a minute or two on one CPU thread): what CI checks of the notebook.
    for module in ("ipykernel", "matplotlib", "accelerate"):
        pytest.importorskip(module)
    committed = TUTORIAL.read_bytes()
    executed = execute_notebook(TUTORIAL, tmp_path / "tutorial.ipynb", quick=True, timeout=600)  # raises if a cell does
    assert TUTORIAL.read_bytes() == committed
    assert stale_cells(nbformat.read(tmp_path / "tutorial.ipynb", as_version=4)) == []
    assert executed.metadata[METADATA_KEY] == {"quick": True}
    assert outputs_of_type(executed, "error") == []
    assert figures(executed) == figures(committed_tutorial())
