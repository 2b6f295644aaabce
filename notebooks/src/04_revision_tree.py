# notebooks/src/04_revision_tree.py: the source of notebooks/04_revision_tree.ipynb (`make notebooks` writes it;
# the format and the standard first cells: nl2sql_lib/notebook_tools.py).
# title: revision trees -> preference pairs
# stage: tree

# %% [markdown]
# The policy (by default this run's SFT model) answers each training question `num_roots` times.
# Every answer is executed and judged against the gold result. A wrong or failing answer is sent
# back with its execution feedback - the error, or a preview of its rows, **never the gold SQL** -
# and the policy writes `num_revisions` revisions, down to `max_depth`. Correct and wrong answers
# of the same question become chosen/rejected pairs for 05_reward_model (rules:
# `nl2sql_lib/tree/pairs.py`).

# %%
from nl2sql_lib.tree.stage import (draw_tree, load_stage_trees, node_table, pick_tree,
                                   plot_repair_by_depth, run_tree)

metrics = run_tree(cfg, stage)          # resumes from tree/shards/ when interrupted
{k: v for k, v in metrics.items() if not isinstance(v, dict)}

# %% [markdown]
# ## One tree
# Nodes coloured by outcome; edges labelled with the token edit distance of the revision.

# %%
trees = load_stage_trees(cfg.run_dir)
tree = pick_tree(trees)
draw_tree(tree)
node_table(tree)

# %% [markdown]
# ## How often does revision repair a wrong answer?

# %%
import pandas as pd

plot_repair_by_depth(metrics["repair_by_depth"])
pd.DataFrame(metrics["repair_by_depth"]).T

# %% [markdown]
# ## Preference pairs
# Split into train and test by question (never by pair).

# %%
from nl2sql_lib.io import read_jsonl

pairs = read_jsonl(stage.path("pairs_train.jsonl"))
print({k: metrics[k] for k in ("pairs_train", "pairs_test")})
display(pd.DataFrame(metrics["pair_stats"]["by_reason"], index=["pairs"]))
pd.DataFrame(pairs, columns=["question_id", "reason", "distance", "margin", "chosen", "rejected"]).head(8)

# %% [markdown]
# ## Verification
# Every node and pair re-executed; `discrepancies` must be empty.

# %%
from nl2sql_lib.io import read_json

report = read_json(stage.path("verification.json"))
print({k: report[k] for k in ("trees", "nodes", "pairs", "discrepancy_counts", "ok")})
report["discrepancies"][:10]

# %%
from nl2sql_lib.tree.stage import headline

stage.finish(headline(metrics))  # the manifest's figures, as `python -m nl2sql_lib.tree` records them
