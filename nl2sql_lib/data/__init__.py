"""Datasets in one shape: Example records, loaders, schema text, prompts, linking labels.

    from nl2sql_lib.data.loaders import load_source          # BIRD, Spider, create-context, JSONL, bundled
    from nl2sql_lib.data.schema import schema_text_for       # schema text for a prompt
    from nl2sql_lib.data.prompts import sql_messages, sql_answer
    from nl2sql_lib.data.build import run_data               # the 01_data stage
"""

from .example import DIFFICULTIES, Example, read_examples, write_examples

__all__ = ["DIFFICULTIES", "Example", "read_examples", "write_examples"]
