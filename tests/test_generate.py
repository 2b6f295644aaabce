"""Batched generation against one-at-a-time generation, candidates, stops, vLLM arguments."""

from __future__ import annotations

import importlib.util

import pytest

from nl2sql_lib.config import ModelParams
from nl2sql_lib.generate import (
    Generator,
    VLLMGenerator,
    cut_at_stop,
    make_generator,
    shared_prefix_groups,
    vllm_llm_kwargs,
    vllm_sampling_kwargs,
)
from nl2sql_lib.models import GPUOnlyError

TINY = ModelParams(spec="tiny:smollm2", dtype="float32")


def _questions(count: int) -> list[list[dict]]:
    # Different lengths, so the batch really is padded on the left.
    return [
        [
            {"role": "system", "content": "Write SQLite SQL."},
            {"role": "user", "content": f"Question {i}: how many singers " + "are older than 30 " * i},
        ]
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def generator() -> Generator:
    return make_generator(TINY, batch_size=4, stop_strings=None, progress=False)


def test_batched_greedy_equals_one_at_a_time(generator):
    questions = _questions(6)
    batched = generator.generate(questions, max_new_tokens=12)
    serial = [generator.generate([q], max_new_tokens=12)[0] for q in questions]
    assert batched == serial
    # The random tiny model writes different, non-empty text for different prompts.
    assert all(texts[0] for texts in batched)
    assert len({texts[0] for texts in batched}) > 1


def _database_questions() -> list[list[dict]]:
    """Questions on three databases of different schema sizes, each with questions of different
    lengths, in no particular order (as 06_eval's prompts: system, schema, then the question),
    and one prompt that shares nothing with the others."""
    prompts = []
    for i in range(4):
        for db in range(3):
            schema = f"CREATE TABLE t{db} (" + ", ".join(f"c{db}_{k} INT" for k in range(4 + 12 * db)) + ");"
            question = f"How many rows of t{db} " + "have a value over 30 and " * (i * (db + 1)) + "exist?"
            prompts.append([{"role": "system", "content": "Write SQLite SQL."},
                            {"role": "user", "content": f"Schema:\n{schema}\n\nQuestion: {question}"}])
    prompts.append([{"role": "user", "content": "Hi"}])
    return prompts


def _old_and_fast(generator, **kwargs) -> tuple[Generator, Generator]:
    old = Generator(generator.model, generator.tokenizer, fast=False, progress=False, **kwargs)
    fast = Generator(generator.model, generator.tokenizer, progress=False, **kwargs)
    return old, fast


def test_fast_greedy_equals_the_old_path(generator):
    """The default (fast) path - each database's prefix computed once, batches mixing databases -
    gives the old model.generate path's greedy texts, at several batch sizes."""
    questions = _database_questions()
    old, fast = _old_and_fast(generator, batch_size=4, stop_strings=None)
    expected = old.generate(questions, max_new_tokens=12)
    assert fast.fast and not old.fast
    for batch in (1, 3, 16):
        fast.fast_batch_size = batch
        assert fast.generate(questions, max_new_tokens=12) == expected, f"fast_batch_size={batch}"
    # it really took the shared-prefix path: 4 groups (3 databases and the lone prompt), and only
    # a fraction of the prompt tokens went through the model
    assert fast.last_stats["prefix_groups"] == 4
    assert fast.last_stats["prompt_tokens_computed"] < 0.5 * fast.last_stats["prompt_tokens"]
    assert len({texts[0] for texts in expected}) > 1


def test_fast_greedy_stops_as_the_old_path(generator):
    """Stop strings that end some rows early (those rows leave the batch) and not others."""
    questions = _database_questions()
    free = Generator(generator.model, generator.tokenizer, fast=False, stop_strings=None, progress=False)
    texts = [t[0] for t in free.generate(questions, max_new_tokens=16)]
    stops = [texts[0].split()[2], texts[5].split()[3]]  # words in the middle of two answers
    old, fast = _old_and_fast(generator, batch_size=4, stop_strings=stops, fast_batch_size=8)
    expected = old.generate(questions, max_new_tokens=16)
    assert fast.generate(questions, n=2, max_new_tokens=16) == [t * 2 for t in expected]
    cut = [t[0] for t in expected]
    assert cut[0].endswith(stops[0]) and cut[5].endswith(stops[1])
    assert sum(len(t) < len(f) for t, f in zip(cut, texts)) >= 2
    assert fast.last_stats["new_tokens"] < free.last_stats["new_tokens"]


def test_shared_prefix_groups():
    schema_a, schema_b = list(range(100, 140)), list(range(200, 230))
    prompts = [schema_a + [1, 2], schema_b + [3], schema_a + [1, 5, 6], [7, 8], schema_a + [9], schema_a + [9]]
    groups = sorted(shared_prefix_groups(prompts), key=lambda g: min(g[1]))
    assert groups == [(40, [0, 2, 4, 5]), (30, [1]), (1, [3])]  # a lone prompt keeps its last token
    assert shared_prefix_groups([]) == []


def test_a_model_in_training_keeps_the_old_path(generator):
    fast = Generator(generator.model, generator.tokenizer, progress=False)
    assert fast._fast_path_applies()
    generator.model.train()
    try:
        assert not fast._fast_path_applies()  # a model being trained (dropout, no cache)
    finally:
        generator.model.eval()


def test_fast_constrained_greedy_equals_the_old_path(generator, tmp_path):
    """Schema-constrained greedy decoding on the fast path (the constraint sees each row's
    tokens, rows leave the batch) gives the old path's texts; unconstrained rows stay free."""
    import sqlite3

    databases = []
    for db in range(3):
        path = tmp_path / f"db{db}.sqlite"
        with sqlite3.connect(path) as conn:
            conn.execute(f"CREATE TABLE t{db} (" + ", ".join(f"c{db}_{k} INT" for k in range(4 + 12 * db)) + ")")
        databases.append(path)
    questions = _database_questions()
    schemas = [databases[i % 3] for i in range(len(questions) - 1)] + [None]  # the lone prompt: free
    old, fast = _old_and_fast(generator, batch_size=4, stop_strings=None)
    expected = old.generate(questions, max_new_tokens=12, schemas=schemas)
    assert old.last_stats["constraint_changed"] > 0  # the constraint really overrode the model
    for batch in (3, 16):
        fast.fast_batch_size = batch
        assert fast.generate(questions, max_new_tokens=12, schemas=schemas) == expected, f"fast_batch_size={batch}"
        assert fast.last_stats["prefix_groups"] == 4
        assert fast.last_stats["constraint_changed"] == old.last_stats["constraint_changed"]
    assert fast.generate(questions, max_new_tokens=12) != expected


def test_greedy_with_n_repeats_the_one_answer(generator):
    out = generator.generate(_questions(2), n=3, max_new_tokens=6)
    assert [len(texts) for texts in out] == [3, 3]
    assert all(len(set(texts)) == 1 for texts in out)


def test_sampling_gives_n_different_candidates_reproducibly(generator):
    first = generator.generate(_questions(3), n=4, temperature=1.0, max_new_tokens=8)
    again = generator.generate(_questions(3), n=4, temperature=1.0, max_new_tokens=8)
    assert [len(texts) for texts in first] == [4, 4, 4]
    assert all(len(set(texts)) > 1 for texts in first)
    assert first == again  # seeded


def test_stats_count_generated_tokens(generator):
    generator.generate(_questions(2), max_new_tokens=5)
    assert generator.last_stats["prompts"] == 2
    assert 2 <= generator.last_stats["new_tokens"] <= 10


def test_prompt_uses_the_chat_template(generator):
    text = generator.prompt_texts(_questions(1))[0]
    assert text.startswith("<|im_start|>system\nWrite SQLite SQL.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")


def test_stop_strings_cut_after_the_first_stop():
    assert cut_at_stop("SELECT 1; SELECT 2;", [";"]) == "SELECT 1;"
    assert cut_at_stop("SELECT 1", [";"]) == "SELECT 1"
    assert cut_at_stop("a; b", None) == "a; b"


def test_stop_string_ends_generation_early(generator):
    """Stopping at a string the free-running greedy text contains gives that text's prefix."""
    question = _questions(1)
    full = generator.generate(question, max_new_tokens=16)[0][0]
    stop = full.split()[2]  # a word in the middle of the free-running text
    stopping = Generator(generator.model, generator.tokenizer, stop_strings=[stop], progress=False)
    cut = stopping.generate(question, max_new_tokens=16)[0][0]
    assert cut.endswith(stop)
    assert full.startswith(cut) and len(cut) < len(full)
    assert stopping.last_stats["new_tokens"] < generator.last_stats["new_tokens"]


def test_vllm_arguments():
    params = ModelParams(spec="Qwen/Qwen2.5-Coder-1.5B-Instruct", max_seq_length=2048)
    llm = vllm_llm_kwargs(params, "/models/qwen", adapter_rank=16, seed=1)
    assert llm["model"] == "/models/qwen" and llm["max_model_len"] == 2048
    assert llm["enable_lora"] is True and llm["max_lora_rank"] == 16
    assert "enable_lora" not in vllm_llm_kwargs(params, "/m")
    greedy = vllm_sampling_kwargs(n=4, temperature=0.0, max_new_tokens=96)
    assert greedy["n"] == 1 and greedy["temperature"] == 0.0
    assert greedy["stop"] == [";"] and greedy["include_stop_str_in_output"] is True
    sampled = vllm_sampling_kwargs(n=4, temperature=0.8, max_new_tokens=96, top_p=0.95, stop_strings=None)
    assert (sampled["n"], sampled["temperature"], sampled["top_p"], sampled["max_tokens"]) == (4, 0.8, 0.95, 96)
    assert "stop" not in sampled


def test_vllm_where_it_cannot_run_says_what_to_change(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "vllm" else real(n, *a))
    with pytest.raises(GPUOnlyError, match="use_vllm: false"):
        make_generator(TINY, use_vllm=True)
    with pytest.raises(GPUOnlyError, match="use_vllm: false"):
        VLLMGenerator(TINY)


def test_vllm_context_is_sized_from_the_prompts(tmp_path, generator):
    import json

    from nl2sql_lib.generate import EngineContext, engine_max_model_len, fitting_new_tokens, longest_prompt_tokens

    tokenizer = generator.tokenizer
    short = [{"role": "user", "content": "How many singers?"}]
    long = [{"role": "user", "content": "How many singers are there? " * 40}]
    longest = longest_prompt_tokens(tokenizer, [short, long])
    assert longest > longest_prompt_tokens(tokenizer, [short]) > 0
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 32768}))
    params = ModelParams(spec="x/y", max_seq_length=64)  # too small for the long prompt
    sized = engine_max_model_len(tokenizer, tmp_path, EngineContext([short, long], max_new_tokens=96), params)
    assert sized == longest + 96
    with_headroom = EngineContext([short, long], max_new_tokens=96, headroom_tokens=400)
    assert engine_max_model_len(tokenizer, tmp_path, with_headroom, params) == longest + 496
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 100}}))
    assert engine_max_model_len(tokenizer, tmp_path, with_headroom, params) == 100  # the model's limit
    assert engine_max_model_len(tokenizer, tmp_path, None, params) == 64  # unknown prompts: the parameter
    # a prompt that still does not fit gets fewer new tokens, or none (an empty answer), not an error
    assert fitting_new_tokens([10, 90, 120], 32, 100) == [32, 10, 0]


def test_vllm_prompt_lengths_count_the_special_tokens_vllm_adds(generator, monkeypatch):
    """vLLM tokenizes a text prompt with add_special_tokens=True: a tokenizer that adds a BOS adds
    it in front of the chat template's own first token. The context is sized, and each prompt's
    new-token budget cut, by exactly that count (one short before, for BOS-adding tokenizers)."""
    import copy
    import sys
    from types import SimpleNamespace

    from nl2sql_lib.generate import VLLMGenerator, longest_prompt_tokens, vllm_prompt_length

    messages = [{"role": "user", "content": "How many singers are there?"}]
    stock = copy.deepcopy(generator.tokenizer)
    text = stock.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    plain = len(stock(text, add_special_tokens=False)["input_ids"])
    assert longest_prompt_tokens(stock, [messages]) == plain  # SmolLM2's tokenizer adds no BOS
    bos = copy.deepcopy(stock)
    bos.add_bos_token = True  # as Llama-style tokenizers do
    assert bos(text)["input_ids"][:2] == [bos.bos_token_id] * 2  # the template starts with it too
    assert vllm_prompt_length(bos, text) == plain + 1
    assert longest_prompt_tokens(bos, [messages]) == plain + 1

    # the per-prompt budget: what is left of max_model_len after the prompt as vLLM counts it
    seen = []
    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(SamplingParams=lambda **kwargs: kwargs))
    engine = object.__new__(VLLMGenerator)
    engine.tokenizer, engine.stop_strings, engine.seed, engine.lora_request = bos, None, 0, None
    engine.max_model_len = plain + 1 + 5
    engine.llm = SimpleNamespace(generate=lambda prompts, params, lora_request=None: (
        seen.extend(params) or [SimpleNamespace(outputs=[SimpleNamespace(text="SELECT 1")]) for _ in prompts]))
    assert engine.generate([messages], max_new_tokens=32) == [["SELECT 1"]]
    assert seen[0]["max_tokens"] == 5


def test_shared_prefix_attention_equals_plain_attention():
    """SharedPrefixBatch's attention (prefix stored once per group, grouped-query heads by
    reshaping) against textbook attention over each row's own [prefix | tokens] sequence: rows
    of three groups (one without a prefix), left padding, a prefill of several tokens and then
    single-token steps, and rows dropped in between."""
    import torch

    from nl2sql_lib.shared_prefix import SharedPrefixBatch

    torch.manual_seed(0)
    layers, kv_heads, group, dim = 2, 2, 3, 8
    heads = kv_heads * group
    prefix_lens = [5, 0, 7]
    prefixes = [[(torch.randn(kv_heads, n, dim), torch.randn(kv_heads, n, dim)) for _ in range(layers)]
                for n in prefix_lens]
    row_groups = [0, 0, 1, 2, 2]
    own_lens = [3, 1, 2, 3, 2]  # question tokens per row, left-padded to 3
    width, steps = 3, 2
    batch = SharedPrefixBatch(prefixes, row_groups, capacity=width + steps)
    history = [[([], []) for _ in range(layers)] for _ in row_groups]  # each row's real keys/values

    def reference(row, layer, q, t_keys, t_values, padding_query):
        prefix_k, prefix_v = prefixes[row_groups[row]][layer]
        keys = torch.cat([prefix_k, torch.stack(t_keys, 1)], 1) if t_keys else prefix_k
        values = torch.cat([prefix_v, torch.stack(t_values, 1)], 1) if t_values else prefix_v
        if padding_query:  # sees the prefix and itself only; its output is never used
            return None
        keys, values = keys.repeat_interleave(group, 0), values.repeat_interleave(group, 0)
        weights = torch.softmax(q[:, None, :] @ keys.transpose(-1, -2) * dim ** -0.5, -1)
        return (weights @ values)[:, 0]  # [heads, dim]

    def check(rows, real, new):
        batch.begin_step(real)
        for layer in range(layers):
            q = torch.randn(len(rows), heads, new, dim)
            k, v = torch.randn(len(rows), kv_heads, new, dim), torch.randn(len(rows), kv_heads, new, dim)
            out = batch.attend(layer, q, k, v, dim ** -0.5)  # [rows, new, heads, dim]
            assert out.shape == (len(rows), new, heads, dim)
            for b, row in enumerate(rows):
                for t in range(new):
                    if real[b, t]:
                        history[row][layer][0].append(k[b, :, t])
                        history[row][layer][1].append(v[b, :, t])
                    expected = reference(row, layer, q[b, :, t], *history[row][layer], not real[b, t])
                    if expected is not None:
                        torch.testing.assert_close(out[b, t], expected, rtol=1e-5, atol=1e-5)

    rows = list(range(len(row_groups)))
    real = torch.tensor([[i >= width - n for i in range(width)] for n in own_lens])
    check(rows, real, width)
    check(rows, torch.ones(len(rows), 1, dtype=torch.bool), 1)
    batch.keep_rows(torch.tensor([1, 2, 4]))  # group 0 keeps one row, group 2 one
    rows = [1, 2, 4]
    assert batch.group_slices == [(0, slice(0, 1)), (1, slice(1, 2)), (2, slice(2, 3))]
    check(rows, torch.ones(len(rows), 1, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="contiguous"):
        SharedPrefixBatch(prefixes, [0, 2, 0], capacity=4)


def test_a_model_that_cannot_switch_attention_fails_loudly(generator, monkeypatch):
    """transformers only warns when a model cannot take another attention implementation; the
    fast path would then attend to nothing of the prefix, so it raises instead, and the model
    keeps its own implementation."""
    from nl2sql_lib.shared_prefix import shared_prefix_attention_on

    model = generator.model
    before = model.config._attn_implementation
    monkeypatch.setattr(type(model), "set_attn_implementation", lambda self, name, **kw: None)
    with pytest.raises(RuntimeError, match="Generator\\(fast=False\\)"):
        with shared_prefix_attention_on(model):
            pass
    assert model.config._attn_implementation == before
