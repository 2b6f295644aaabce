# notebooks/src/01_data.py: the source of notebooks/01_data.ipynb (`make notebooks` writes it;
# the format and the standard first cells: nl2sql_lib/notebook_tools.py).
# title: datasets in one shape
# stage: data

# %% [markdown]
# Every dataset becomes one record type, `Example` (question, gold SQL, database path, evidence,
# difficulty). This notebook loads the sources the parameters name (by default the **bundled
# benchmark**: ten generated SQLite databases, no download), labels the tables and columns each
# gold SQL uses (schema linking, via sqlglot), optionally asks a teacher model for reasoning, and
# writes the full splits:
#
# - `data/train.jsonl`, `data/dev.jsonl`: one `Example` per line (dev databases never appear in train);
# - `data/stats.json`: counts, schema sizes, prompt token lengths, questions without a database;
# - `data/databases/`: databases the loaders generate (bundled, sql-create-context).
#
# Later stages subsample these splits themselves and reuse `schema_render` from this stage's
# manifest, so prompts look the same at training and evaluation time.

# %%
from nl2sql_lib.data.build import read_stats, run_data, stats_tables
from nl2sql_lib.data.stats import plot_difficulty_by_db, plot_prompt_lengths, plot_schema_sizes

metrics = run_data(cfg, stage)
metrics

# %% [markdown]
# ## Questions by split and difficulty, and the databases behind them

# %%
stats = read_stats(stage)
difficulty, schema_sizes, prompt_lengths = stats_tables(stats)
print("train databases:", ", ".join(stats["databases"]["train"]))
print("dev databases:  ", ", ".join(stats["databases"]["dev"]))
print("databases in both splits:", stats["db_overlap"] or "none")
print("questions whose database file is missing:", {k: len(v) for k, v in stats["missing_db"].items()})
difficulty

# %%
plot_difficulty_by_db(stats);

# %% [markdown]
# ## Schema sizes
#
# The schema is rendered as `CREATE TABLE` text with types, keys, sample values and (for BIRD)
# column descriptions; under the `schema_render.max_tokens` budget the least-needed detail goes
# first: descriptions, then sample values, then types and keys (compact `table(col, ...)` lines),
# then foreign keys, and last whole tables.

# %%
plot_schema_sizes(stats);
schema_sizes

# %% [markdown]
# ## Prompt token lengths (the exact chat the training stages build)

# %%
plot_prompt_lengths(stats, budget=cfg.token_budget);
prompt_lengths

# %% [markdown]
# ## One training example as the model sees it

# %%
from nl2sql_lib.data.example import read_examples
from nl2sql_lib.data.prompts import sql_answer, sql_messages
from nl2sql_lib.data.schema import schema_text_for

example = read_examples(stage.path("train.jsonl"))[0]
for message in sql_messages(example, schema_text_for(example, cfg.schema_render)):
    print(f"--- {message['role']}\n{message['content']}")
print(f"--- assistant\n{sql_answer(example)}")
print("schema links:", example.schema_links)

# %%
from nl2sql_lib.data.build import headline

stage.finish(headline(metrics))  # the manifest's figures, as `python -m nl2sql_lib.data.build` records them
