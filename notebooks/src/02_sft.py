# notebooks/src/02_sft.py: the source of notebooks/02_sft.ipynb (`make notebooks` writes it;
# the format and the standard first cells: nl2sql_lib/notebook_tools.py).
# title: supervised fine-tuning (loss on the answer only)
# stage: sft

# %% [markdown]
# Supervised fine-tuning teaches the model the answer format: the question and the database's
# schema in, one SQL query out. It trains with TRL's `SFTTrainer` on the prompt/completion chat
# records of `data/train.jsonl`, with the loss on the answer only, as LoRA or full fine-tuning
# (`full_finetune`). It saves `sft/adapter` (LoRA) or `sft/model` (full weights) and
# `sft/metrics.json`; later stages load the result as the model spec `stage:sft`.
#
# Interrupted? Run it again: it resumes from the last checkpoint in `sft/checkpoints` as long as
# the parameters are the same.

# %%
from nl2sql_lib.train.sft import run_sft

metrics = run_sft(cfg, stage)
{k: v for k, v in metrics.items() if k not in ("loss_curve", "samples")}

# %% [markdown]
# ## Training loss (answer tokens only)

# %%
import matplotlib.pyplot as plt

curve = metrics["loss_curve"]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot([row["step"] for row in curve], [row["loss"] for row in curve], marker=".")
ax.set_xlabel("optimizer step")
ax.set_ylabel("loss")
ax.set_title(f"02_sft: {metrics['method']} on {metrics['model_spec']}")
fig.savefig(stage.path("loss_curve.png"), dpi=120, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## A few dev questions, before and after training
#
# Dev databases never appear in training. `correct` compares the query's result with the gold
# query's on the database (06_eval measures this on the whole dev split).

# %%
import pandas as pd

pd.set_option("display.max_colwidth", 120)
print("before:", metrics.get("dev_samples_before"), " after:", metrics.get("dev_samples_after"))
pd.DataFrame(metrics.get("samples", []))

# %%
from nl2sql_lib.train.sft import headline

stage.finish(headline(metrics))  # the manifest's figures, as `python -m nl2sql_lib.train.sft` records them
