"""Schema-constrained decoding: the word/prefix scanner, the logits processor on scripted logits,
and generation with the tiny model (batched equals one at a time)."""

from __future__ import annotations

import sqlite3

import pytest
import torch

from nl2sql_lib.config import ModelParams
from nl2sql_lib.constrained import (
    SchemaConstrainedLogitsProcessor,
    SchemaVocabulary,
    SqlScanner,
    schema_vocabulary,
    token_texts,
)
from nl2sql_lib.generate import Generator, make_generator

TINY = ModelParams(spec="tiny:smollm2", dtype="float32")

SINGERS = {
    "singer": ["Singer_ID", "Name", "Age", "Country"],
    "concert": ["concert_ID", "concert_Name", "Stadium_ID", "Year"],
    "singer_in_concert": ["concert_ID", "Singer_ID"],
}


@pytest.fixture(scope="module")
def vocab() -> SchemaVocabulary:
    return SchemaVocabulary.from_names(SINGERS)


@pytest.fixture(scope="module")
def generator() -> Generator:
    return make_generator(TINY, batch_size=4, stop_strings=None, progress=False)


@pytest.fixture(scope="module")
def tokenizer(generator):
    return generator.tokenizer


@pytest.fixture()
def singers_db(tmp_path):
    path = tmp_path / "singers.sqlite"
    conn = sqlite3.connect(path)
    for table, columns in SINGERS.items():
        conn.execute(f"CREATE TABLE {table} ({', '.join(columns)})")
    conn.commit()
    conn.close()
    return path


def whole(vocab: SchemaVocabulary, sql: str) -> bool:
    """``sql`` passes the scanner and may end where it ends."""
    scanner = SqlScanner(vocab)
    return scanner.feed(sql, strict=True) and scanner.accepts_end()


# --------------------------------------------------------------------------------------------
# The scanner
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "SELECT name, age FROM singer;",
    "select NAME from SINGER",  # case-insensitive
    "SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id",
    "SELECT count(*) AS cnt FROM singer GROUP BY country ORDER BY cnt DESC LIMIT 1",
    "SELECT CAST(SUM(age) AS REAL) * 100 / COUNT(*) FROM singer WHERE age >= 3.5",
    "SELECT name FROM singer T1 WHERE T1.age > 1",
    "SELECT T1.year FROM concert AS T1 EXCEPT SELECT T1.name FROM singer AS T1",
    "SELECT name FROM singer WHERE singer_id IN (SELECT T1.singer_id FROM singer_in_concert AS T1)",
    "SELECT name FROM singer AS T1 WHERE age > (SELECT AVG(age) FROM singer AS T2 WHERE T2.country = T1.country)",
    "WITH x AS (SELECT age FROM singer) SELECT x.age FROM x",
    "SELECT year FROM (SELECT year FROM concert) AS a WHERE a.year > 1",
    "SELECT strftime('%Y', year) FROM concert",
    "SELECT `Name` FROM `singer`",
    "SELECT singer.name FROM singer, concert WHERE concert.year > 2000",
    "SELECT name FROM singer ORDER BY name COLLATE NOCASE",
])
def test_valid_sql_passes(vocab, sql):
    assert whole(vocab, sql)


@pytest.mark.parametrize("sql, why", [
    ("SELECT nam FROM singer", "a word that is only a prefix may not end"),
    ("SELECT name FROM singers", "no such table"),
    ("SELECT name FROM age", "a column where a table must be"),
    ("SELECT stadium FROM concert", "no such column anywhere"),
    ("SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.name", "T2 is concert"),
    ("SELECT name FROM singer WHERE year > 2000", "year is not a column of singer"),
    ("SELECT EXTREME(age) FROM singer", "no such function"),
    ("SELECT `Nam` FROM singer", "a checked quoted identifier"),
    ("SELECT s.name FROM singer AS s", "only T<n> aliases may be used before they are defined"),
    ("SELECT name FROM singer ORDER BY concert", "a table where a column must be"),
    ("SELECT name FROM singer GROUP BY ANALYZE", "not a query keyword"),
    ("SELECT name FROM singer ORDER BY T1", "a bare alias outside FROM"),
    ("SELECT name FROM singer WHERE datetime.year = 1", "a function is no qualifier"),
    ("SELECT name FROM singer WHERE concert.year = 1", "a qualifier table outside the FROM tables"),
])
def test_unknown_identifiers_fail(vocab, sql, why):
    assert not whole(vocab, sql), why


def test_strings_and_numbers_are_free(vocab):
    scanner = SqlScanner(vocab)
    assert scanner.feed("SELECT name FROM singer WHERE country = '", strict=True)
    assert scanner.accepts("Zzyzx qwerty_42 FROM nowhere")  # inside a string anything goes
    assert scanner.accepts("abc' AND age > 1e5")  # the string ends; 1e5 is a number
    assert not scanner.accepts("abc' AND agez")  # after the string, words are checked again
    assert SqlScanner(vocab).feed('SELECT name FROM singer WHERE country = "France or whatever"', strict=True)


def test_prefixes_are_checked_while_the_word_grows(vocab):
    scanner = SqlScanner(vocab)
    assert scanner.feed("SELECT sing", strict=True)  # could become singer / singer_id
    assert scanner.accepts("er_id")
    assert not scanner.accepts("ers")
    assert scanner.accepts("er")  # complete: may be followed by anything
    assert not scanner.accepts(" ")  # "sing" itself is not a word


def test_accepts_leaves_the_state_alone(vocab):
    scanner = SqlScanner(vocab)
    scanner.feed("SELECT T1.name FROM singer AS T1 WHERE T1.", strict=True)
    before = dict(vars(scanner))
    assert not scanner.accepts("year")
    assert scanner.accepts("age")
    assert vars(scanner) == before


def test_vocabulary_from_a_database_file(singers_db):
    vocab = schema_vocabulary(singers_db)
    assert vocab.tables == {"singer", "concert", "singer_in_concert"}
    assert {"singer_id", "concert_name", "year"} <= vocab.columns
    assert schema_vocabulary(str(singers_db)) is vocab  # cached per file


def test_token_texts_follow_the_tokenizer(tokenizer):
    texts = token_texts(tokenizer)
    assert len(texts) == len(tokenizer)
    assert texts[tokenizer.eos_token_id] is None
    ids = tokenizer(" FROM singer", add_special_tokens=False)["input_ids"]
    assert "".join(texts[i] for i in ids) == " FROM singer"


# --------------------------------------------------------------------------------------------
# The processor on scripted logits
# --------------------------------------------------------------------------------------------


def _one_token(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{text!r} is {len(ids)} tokens"
    return ids[0]


def _step(tokenizer, vocab, prefix: str, ranked: list[str], *, widen: bool = True):
    """Run the processor on ``prefix`` (as generated text) with ``ranked`` tokens on top,
    checking exactly those (top_k = their number)."""
    prompt = tokenizer("Question?", add_special_tokens=False)["input_ids"]
    generated = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    processor = SchemaConstrainedLogitsProcessor(tokenizer, [vocab], top_k=len(ranked), widen=widen)
    scores = torch.zeros(1, len(tokenizer))
    processor(torch.tensor([prompt]), scores.clone())  # first call: the prompt only
    ids = [_one_token(tokenizer, t) for t in ranked]
    for rank, token in enumerate(ids):
        scores[0, token] = 10.0 - rank
    out = processor(torch.tensor([prompt + generated]), scores)
    return out[0], ids, processor


def test_an_invalid_identifier_token_is_masked_and_a_valid_one_kept(tokenizer, vocab):
    # After FROM only a table may follow: " singers" does not exist, " singer" does.
    out, (bad, good), processor = _step(tokenizer, vocab, "SELECT name FROM", [" singers", " singer"])
    assert out[bad] == float("-inf")
    assert out[good] == 9.0
    assert torch.isinf(out).sum() == len(tokenizer) - 1  # everything else outside top-k masked too
    assert processor.stats["changed"] == 1 and processor.stats["fallback"] == 0


def test_a_column_of_the_wrong_table_is_masked(tokenizer, vocab):
    out, (year, age), _ = _step(tokenizer, vocab, "SELECT T1.name FROM singer AS T1 WHERE T1.", ["year", "age"])
    assert out[year] == float("-inf") and out[age] == 9.0


def test_strings_and_numbers_are_not_constrained(tokenizer, vocab):
    out, ids, processor = _step(tokenizer, vocab, "SELECT name FROM singer WHERE country = '", ["Paris", "world", "'"])
    assert [out[i].item() for i in ids] == [10.0, 9.0, 8.0]
    assert processor.stats["changed"] == 0
    out, ids, _ = _step(tokenizer, vocab, "SELECT name FROM singer WHERE age > ", ["3", "7"])
    assert [out[i].item() for i in ids] == [10.0, 9.0]


def test_no_valid_top_k_token_searches_further(tokenizer, vocab):
    """" singers" and " stadium" are not tables; the best valid token below them is kept."""
    out, (singers, stadium), processor = _step(tokenizer, vocab, "SELECT name FROM", [" singers", " stadium"])
    kept = torch.isfinite(out).nonzero().flatten().tolist()
    assert out[singers] == out[stadium] == float("-inf")
    assert 1 <= len(kept) <= 2  # at most top_k valid tokens from further down
    assert all(SqlScanner(vocab).feed("SELECT name FROM" + tokenizer.decode([t]), strict=True) for t in kept)
    assert processor.stats["widened"] == 1 and processor.stats["fallback"] == 0


def test_without_widening_no_valid_token_leaves_the_step_unconstrained(tokenizer, vocab):
    out, _, processor = _step(tokenizer, vocab, "SELECT name FROM", [" singers", " stadium"], widen=False)
    assert torch.isfinite(out).all()
    assert processor.stats["fallback"] == 1 and processor.stats["changed"] == 0


def test_rows_without_a_vocabulary_are_free(tokenizer, vocab):
    prompt = tokenizer("Q", add_special_tokens=False)["input_ids"]
    processor = SchemaConstrainedLogitsProcessor(tokenizer, [None, vocab])
    scores = torch.randn(2, len(tokenizer))
    out = processor(torch.tensor([prompt, prompt]), scores.clone())
    assert torch.equal(out[0], scores[0])
    assert torch.isinf(out[1]).any()
    with pytest.raises(ValueError, match="one per row"):
        processor(torch.tensor([prompt]), scores[:1])


# --------------------------------------------------------------------------------------------
# Generation with the tiny model
# --------------------------------------------------------------------------------------------


def _questions(count: int) -> list[list[dict]]:
    return [
        [
            {"role": "system", "content": "Write SQLite SQL."},
            {"role": "user", "content": f"Question {i}: how many singers " + "are older than 30 " * i},
        ]
        for i in range(count)
    ]


def test_constrained_greedy_batched_equals_one_at_a_time(generator, singers_db):
    questions = _questions(5)
    schemas = [singers_db] * 5
    batched = generator.generate(questions, max_new_tokens=12, schemas=schemas)
    assert generator.last_stats["constraint_steps"] > 0
    serial = [generator.generate([q], max_new_tokens=12, schemas=[singers_db])[0] for q in questions]
    assert batched == serial
    free = generator.generate(questions, max_new_tokens=12)
    assert batched != free  # the random tiny model writes words no schema has
    assert "constraint_steps" not in generator.last_stats


def test_constrained_greedy_picks_the_best_valid_token(generator, singers_db):
    """Greedy decoding under the constraint takes the highest-scoring token the scanner accepts."""
    from transformers import LogitsProcessorList

    model, tok = generator.model, generator.tokenizer
    vocab = schema_vocabulary(singers_db)
    texts = token_texts(tok)
    prompt = generator.prompt_texts(_questions(1))[0] + "SELECT name FROM"
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        ranked = model(**enc).logits[0, -1].argsort(descending=True).tolist()
    scanner = SqlScanner(vocab)
    scanner.feed("SELECT name FROM")  # the scanner sees only what the model writes
    processor = SchemaConstrainedLogitsProcessor(tok, [None], top_k=256)
    processor.scanners = [scanner]  # start it mid-query, where only a table may follow
    best_valid = next(t for t in ranked[:256] if texts[t] is not None and scanner.accepts(texts[t]))
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=1, do_sample=False, pad_token_id=tok.eos_token_id,
                             logits_processor=LogitsProcessorList([processor]))
    assert out[0, -1].item() == best_valid
    assert ranked[0] != best_valid  # the random model's own first choice was not a table


def test_constrained_sampling_is_reproducible(generator, singers_db):
    questions = _questions(2)
    first = generator.generate(questions, n=2, temperature=1.0, max_new_tokens=6, schemas=[singers_db] * 2)
    again = generator.generate(questions, n=2, temperature=1.0, max_new_tokens=6, schemas=[singers_db] * 2)
    assert first == again and [len(t) for t in first] == [2, 2]
    assert generator.last_stats["constraint_steps"] > 0


def test_candidates_of_a_prompt_share_its_schema(generator, vocab):
    """generate() repeats each prompt's row n times in order; the vocabularies follow."""
    processor = generator._constraint([None, vocab], per_prompt=2, greedy=False)
    assert [s is not None for s in processor.scanners] == [False, False, True, True]
    assert generator._constraint([None, None], per_prompt=2, greedy=True) is None


def test_only_the_prompts_given_a_schema_are_constrained(generator, singers_db):
    questions = _questions(3)
    free = generator.generate(questions, max_new_tokens=12)
    mixed = generator.generate(questions, max_new_tokens=12, schemas=[None, singers_db, None])
    assert mixed[0] == free[0] and mixed[2] == free[2]
    with pytest.raises(ValueError, match="one per prompt"):
        generator.generate(questions, schemas=[singers_db])
