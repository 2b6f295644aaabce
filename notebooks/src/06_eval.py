# notebooks/src/06_eval.py: the source of notebooks/06_eval.ipynb (`make notebooks` writes it;
# the format and the standard first cells: nl2sql_lib/notebook_tools.py).
# title: every system, best of N, one report
# stage: eval

# %% [markdown]
# Every system of this run answers the same questions: the base model, the SFT model, the GRPO
# model (and the DPO model when 05 trained one), on a fixed sample of the bundled dev databases -
# never seen in training - and, when `spider_path` is set, on Spider dev. A system named with
# `+constrained` (`sft+constrained`) is the same model decoding under the schema constraint of
# `nl2sql_lib.constrained`: where it writes a table or column name, only the question's own
# names are allowed; `+revise` (`sft+revise`) takes the model's greedy answer, runs it, and when
# it fails (or holds no SQL) gives the model the error and takes its one revision. Each system decodes
# greedily; for `best_of_n_systems` a pool of `num_candidates` answers (the greedy one plus
# samples at `temperature`) is chosen among by:
#
# | strategy | picks |
# |---|---|
# | `greedy` | the greedy answer |
# | `vote@N` | the answer whose execution result most candidates share (failed SQL does not vote) |
# | `rm@N` | the answer the reward model of 05_reward_model scores highest among those that run |
# | `rm_vote@N` | the vote again, each candidate weighing sigmoid(its reward-model score) |
# | `oracle@N` | a correct answer whenever the pool has one (pass@N: the ceiling for any picker) |
#
# Predictions are cached in `eval/predictions_<system>.jsonl`: a re-run only generates what is
# missing or what a retrained model made stale.

# %%
from nl2sql_lib.evaluate.stage import comparison_frame, examples_frame, run_eval, selection_frame, show_plots

metrics = run_eval(cfg, stage)          # writes eval/metrics.json and eval/report.md

# %% [markdown]
# ## One table: every system and strategy, overall and by difficulty (EX %)

# %%
import pandas as pd
pd.set_option("display.max_colwidth", 90)
comparison_frame(metrics)

# %% [markdown]
# ## Best of N: the oracle's headroom, and how much of it vote and the reward model recover
# `headroom` = oracle - greedy; `*_recovered` = (strategy - greedy) / headroom, in %.

# %%
selection_frame(stage.dir)

# %% [markdown]
# ## Plots
# EX overall and by difficulty, why predictions miss, component scores, best of N.

# %%
show_plots(stage.dir);

# %% [markdown]
# ## A few dev questions, every system's answer (`+` right, `-` wrong)

# %%
examples_frame(stage.dir)

# %% [markdown]
# ## Ask the model
# The system with the best greedy EX answers a dev question through `nl2sql_lib.ask` (the same
# path as `python -m nl2sql_lib.ask --db ... --model ... "question"`): candidates, a vote, the
# chosen SQL run read-only. Change `question` to ask your own.

# %%
from nl2sql_lib.ask import ask, format_answer
from nl2sql_lib.evaluate.stage import ask_setup
from nl2sql_lib.evaluate.systems import free_memory

system, generator, question, db_path = ask_setup(cfg, metrics)
answer = ask(question, db_path, generator, strategy="vote", n=cfg.num_candidates,
             temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
             schema_params=system.schema())
print(f"[{system.name}] {question}  ({db_path})")
print(format_answer(answer, rows=5, show_candidates=True))
del generator
free_memory()

# %%
from nl2sql_lib.evaluate.stage import headline

stage.finish(headline(metrics))  # the manifest's figures, as `python -m nl2sql_lib.evaluate.stage` records them
