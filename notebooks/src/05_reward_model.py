# notebooks/src/05_reward_model.py: the source of notebooks/05_reward_model.ipynb (`make notebooks` writes it;
# the format and the standard first cells: nl2sql_lib/notebook_tools.py).
# title: a reward model that ranks SQL answers
# stage: reward_model

# %% [markdown]
# A reward model reads a question's prompt and one SQL answer and returns a number: higher means
# "more likely correct". It is the profile's base model with a one-output score head
# (`AutoModelForSequenceClassification`), trained with TRL's `RewardTrainer` on preference pairs
# (chosen = a correct SQL, rejected = a wrong one for the same question) with the Bradley-Terry
# loss `-log sigmoid(r_chosen - r_rejected - margin)`. LoRA adapts the body; the score head trains
# in full. The score is read at the last token of the chat text `prompt + assistant SQL`
# (`nl2sql_lib/scoring.py` says why padding uses a token other than `<|im_end|>`). With
# `execution_feedback: true` the assistant turn also shows what that SQL did on the question's
# database, one line such as `-- result: error no_such_column: no such column: segmnt` or
# `-- result: 3 rows x 1 column (name): Ava; Ben; ...` (its own outcome, never the gold's).
#
# Pairs come from the revision trees of 04 (`pairs_source: tree`), from execution-checked wrong
# edits of the gold SQL (`gold_perturbed`), or both. Test pairs are from held-out questions.

# %%
from nl2sql_lib.train.reward_model import run_reward_model

metrics = run_reward_model(cfg, stage)     # resumes from reward_model/checkpoints/ when interrupted
print(f"pairwise accuracy on {metrics['n']} held-out pairs: {metrics['pairwise_accuracy']:.3f}")
{"pairs": metrics["pairs"], "train": metrics["train"]}

# %% [markdown]
# ## Score gaps and accuracy by difficulty
# A pair is ranked right when its gap (chosen - rejected) is above 0.

# %%
import pandas as pd
from IPython.display import Image, display

from nl2sql_lib.io import read_jsonl

items = pd.DataFrame(read_jsonl(stage.path("test_scores.jsonl")))
if cfg.plots:
    display(Image(filename=str(stage.path("plots/score_gap.png"))))
display(pd.DataFrame(metrics["by_difficulty"]).T)
pd.DataFrame(metrics.get("by_reason", {})).T

# %% [markdown]
# ## The pairs it ranks worst
# Where the reward model prefers the wrong SQL most strongly.

# %%
items.sort_values("gap")[["question_id", "difficulty", "reason", "gap", "chosen", "rejected"]].head(8)

# %% [markdown]
# ## Using it: rerank candidates
# 06_eval picks among N sampled candidates with `RewardScorer.score(prompt, sqls, db_path=...)`
# (the database lets an execution-feedback model run each candidate); the same call on one
# held-out prompt:

# %%
from nl2sql_lib.scoring import RewardScorer

scorer = RewardScorer.from_spec("stage:reward_model", run_dir=cfg.run_dir)
pair = read_jsonl(stage.path("test_pairs.jsonl"))[0]
print(pair["prompt"][-1]["content"].split("Question:")[-1].strip())
sqls = [pair["chosen"], pair["rejected"]]
for sql, score in zip(sqls, scorer.score(pair["prompt"], sqls, db_path=pair.get("db_path"))):
    print(f"{score:+.3f}  {sql}")

# %%
from nl2sql_lib.train.reward_model import headline

stage.finish(headline(metrics))  # the manifest's figures, as `python -m nl2sql_lib.train.reward_model` records them
