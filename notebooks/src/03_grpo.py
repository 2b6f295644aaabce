# notebooks/src/03_grpo.py: the source of notebooks/03_grpo.ipynb (`make notebooks` writes it;
# the format and the standard first cells: nl2sql_lib/notebook_tools.py).
# title: GRPO, reinforcement learning from execution
# stage: grpo

# %% [markdown]
# The SFT model has learned what SQL looks like; GRPO teaches it to be *right*. For every training
# question the policy samples `num_generations` queries, each is executed against the question's
# database, and the rewards of `nl2sql_lib.rewards` score them:
#
# | reward | score |
# |---|---|
# | `execution` | 1 when the result matches the gold query's result |
# | `executable` | 1 when the query runs at all (a small weight: right-but-wrong beats failing) |
# | `partial` | sqlglot clause-by-clause similarity to the gold query, in [0, 1] |
# | `syntax` | 1 when sqlglot parses the answer |
# | `format` | 1 for `<think>...</think>` then exactly one query (reasoning), or one query alone |
#
# Weights come from the parameter file (`rewards:`); TRL normalizes the weighted sum within each
# question's group, so a completion is pushed up exactly when it beats its siblings.
#
# That is also GRPO's weak spot: when every completion of a group earns the same reward (all
# right, or all wrong) every advantage is zero and the step teaches nothing. With
# `pass_rate_filter.enabled` the policy first answers `candidates` training questions
# `samples` times each, and only the questions it gets right sometimes but not always are
# trained on; `nonzero_advantage_share` reports the share of groups whose total reward varied
# (partial credit makes that most of them) and `reward_signal` the same per reward - for
# `execution`, the groups where some completions were right and some wrong.

# %%
from nl2sql_lib.train.grpo import headline, plot_training, run_grpo, samples_table

with stage.timer("grpo"):
    metrics = run_grpo(cfg, stage)
headline(metrics)

# %% [markdown]
# ## Rewards, entropy and KL over the steps
#
# Each reward is its own curve (`rewards/<name>/mean` in TRL's logs); `execution` reads as the
# execution accuracy of the sampled completions. The KL to the starting policy is only computed
# when `beta > 0`.

# %%
fig = plot_training(metrics, stage.path("curves.png"))
# execution_halves: the second half of the steps against the first, with its 95% interval and p;
# reward_signal: per reward, the share of question groups whose completions it scored differently
{"execution_trend": metrics["execution_trend"], "execution_halves": metrics["execution_halves"],
 "nonzero_advantage_share": metrics["nonzero_advantage_share"], "reward_signal": metrics["reward_signal"],
 "pass_rate_selection": metrics["pass_rate_selection"]}

# %% [markdown]
# ## Sampled completions at the start and at the end of training

# %%
import pandas as pd
pd.set_option("display.max_colwidth", 120)
samples_table(metrics)

# %%
from nl2sql_lib.train.grpo import headline

stage.finish(headline(metrics))  # the manifest's figures, as `python -m nl2sql_lib.train.grpo` records them
