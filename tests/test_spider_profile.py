"""The spider profile (params/spider/): Spider's training set as train, Spider dev as dev.

Its data folders are not part of the project: validation must find them (relative to the
project root, where make pipeline and papermill run) or stop naming the file, the key and the path.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nl2sql_lib.config import STAGES, ParamsError
from nl2sql_lib.notebook_tools import write_notebook
from nl2sql_lib.pipeline import NOTEBOOK_OF_STAGE, plan

PROJECT = Path(__file__).resolve().parent.parent
SHARED = PROJECT.parent / "shared"


def _project_with_spider_profile(root: Path) -> Path:
    """A throw-away project root holding the real params/spider/ and a toy notebook per stage."""
    shutil.copytree(PROJECT / "params" / "spider", root / "params" / "spider")
    for stage in STAGES:
        write_notebook(root / "notebooks" / f"{NOTEBOOK_OF_STAGE[stage]}.ipynb", stage, "toy",
                       [("code", "stage.finish({})")])
    return root


def test_without_spiders_folders_validation_names_the_file_key_and_path(tmp_path):
    root = _project_with_spider_profile(tmp_path / "project")
    with pytest.raises(ParamsError) as error:
        plan("spider", "r", "01_data", "06_eval", root=root)
    message = str(error.value)
    assert "params/spider/data.yaml" in message and "sources.0.path" in message
    assert "../shared/spider-train" in message
    assert not (root / "outputs").exists()


def test_with_spiders_folders_every_stage_validates(tmp_path):
    for folder in ("spider-train", "spider-dev"):
        if not (SHARED / folder).is_dir():  # a user's clone may lack them; CI always has them
            if os.environ.get("CI"):
                pytest.fail(f"{SHARED / folder} is missing; CI always has it")
            pytest.skip(f"{SHARED / folder} is not here")
    root = _project_with_spider_profile(tmp_path / "project")
    (tmp_path / "shared").mkdir()
    for folder in ("spider-train", "spider-dev"):
        (tmp_path / "shared" / folder).symlink_to(SHARED / folder)
    planned = plan("spider", "r", "01_data", "06_eval", root=root)
    assert [item.stage for item in planned] == list(STAGES)
    data = planned[0].parameters
    assert [(s["path"], s["split"]) for s in data["sources"]] == [
        ("../shared/spider-train", "train"), ("../shared/spider-dev", "dev")]
