"""Evaluation: metrics (EX, exact match, component scores, VES), candidate selection, reports, CLI.

Submodules are imported on use (``from nl2sql_lib.evaluate.metrics import summarize``) so that
``python -m nl2sql_lib.evaluate`` and the light helpers never pull in matplotlib or models.
"""
