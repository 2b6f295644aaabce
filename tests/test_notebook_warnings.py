"""The check that executed notebooks carry no warning (tests/notebook_warnings.py), on notebooks
built here; the smoke pipeline test applies it to the six executed notebooks."""

import nbformat

from tests.notebook_warnings import notebook_warnings


def _executed(tmp_path, outputs_per_cell):
    notebook = nbformat.v4.new_notebook()
    for outputs in outputs_per_cell:
        cell = nbformat.v4.new_code_cell("pass")
        cell.outputs = outputs
        notebook.cells.append(cell)
    path = tmp_path / "02_sft.ipynb"
    nbformat.write(notebook, path)
    return path


def _stderr(text):
    return nbformat.v4.new_output("stream", name="stderr", text=text)


def test_warnings_are_listed_with_cell_and_text(tmp_path):
    path = _executed(tmp_path, [
        [_stderr(".venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found.\n"
                 "  from .autonotebook import tqdm as notebook_tqdm\n")],
        [nbformat.v4.new_output("stream", name="stdout", text="warning: printed on stdout is the notebook's own\n")],
        [_stderr("Map: 100%|##########| 292/292 [00:00<00:00]\r"),
         _stderr("[transformers] Ignoring clean_up_tokenization_spaces=True for BPE tokenizer\n")],
        [_stderr("FutureWarning: `gradient_checkpointing` is deprecated\n")],
    ])
    assert notebook_warnings(path) == [
        "02_sft.ipynb cell 0: .venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found.",
        "02_sft.ipynb cell 2: [transformers] Ignoring clean_up_tokenization_spaces=True for BPE tokenizer",
        "02_sft.ipynb cell 3: FutureWarning: `gradient_checkpointing` is deprecated",
    ]


def test_progress_bars_and_clean_output_pass(tmp_path):
    path = _executed(tmp_path, [
        [_stderr("generate base:  56%|#####6    | 36/64 [00:31<00:24,  1.13q/s]\r")],
        [nbformat.v4.new_output("stream", name="stdout", text="trained 10 steps\n")],
    ])
    assert notebook_warnings(path) == []


def test_an_error_output_is_reported(tmp_path):
    error = nbformat.v4.new_output("error", ename="ValueError", evalue="bad", traceback=["..."])
    assert notebook_warnings(_executed(tmp_path, [[error]])) == ["02_sft.ipynb cell 0: ValueError: bad"]
