"""Decoding that can only name the schema's tables and columns (issue #4, schema grounding).

    vocab = schema_vocabulary("dev_databases/shop/shop.sqlite")      # cached per file
    processor = SchemaConstrainedLogitsProcessor(tokenizer, [vocab, ...])   # one per row
    model.generate(..., logits_processor=LogitsProcessorList([processor]))
    # or simply: Generator.generate(messages, schemas=[ex.db_path for ex in examples])

Why: on unseen databases nearly every miss of the fine-tuned 135M model names a table or column
that does not exist (docs/cpu-notes.md, the Spider measurement). Here the model may only write *bare words* (runs of
``[A-Za-z0-9_]`` and, as in SQLite, non-ASCII characters, outside quotes) that SQLite could
resolve:

- SQLite's query keywords and function names, ``T1``-style aliases, and any name the query
  itself defined before (the word after ``AS``): other aliases may not be used before their
  definition (Spider's and BIRD's gold SQL never do);
- a table name: right after ``FROM`` / ``JOIN`` (there it must be one), as a qualifier
  (``singer.``) or in a ``FROM a, b`` list;
- right after ``FROM`` / ``JOIN``: a table name (or a name the query defined, e.g. a CTE);
- right after ``x.``: a column, of table ``x`` when ``x`` is a table or an alias bound to one
  (``FROM singer AS T1`` binds ``T1``), else any column;
- an unqualified column, once the current query's FROM is written: a column of its FROM tables
  or of an enclosing query's (before that, e.g. in the SELECT list, a column of any table).

While a word is being written it must stay a case-insensitive prefix of an allowed word, and it
may only end (a non-word character) when it is a complete allowed word. Numbers, '...' strings
and "..." text are free: SQLite reads a "..." that names no column as a string literal, and the
models use it both ways. `...` and [...] identifiers are checked like bare words.

Only the ``top_k`` tokens by logit are checked each step (a Python check of all 49k tokens
would cost more than the model's forward pass); valid ones keep their logits and every other
token is masked. When none of them is valid (the model wrote a prefix such as ``Pet`` whose
only completions it finds unlikely), ``widen=True`` searches the rest of the vocabulary in
logit order for valid tokens; with ``widen=False``, or when nothing is valid at all, the step
is left unconstrained and the word that results is not checked further (so the model can
never get stuck). In greedy decoding the output only changes at the steps where the model's
first choice was an invalid identifier.

The scanner is a small hand-written lexer, not a SQL parser: it knows words, quotes, dots and
the last few lexemes, which is all the checks above need.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence, Union

from transformers import LogitsProcessor

# The keywords of SQLite (https://sqlite.org/lang_keywords.html) a query can use, plus TRUE,
# FALSE and ROWID (the word after COLLATE, a collation name, is free). DDL, transaction and PRAGMA words are left out: a
# model that cannot write the column it wants otherwise escapes into words like ANALYZE.
SQLITE_KEYWORDS = frozenset("""
all and as asc between by case cast collate cross current current_date current_time
current_timestamp desc distinct else end escape except exclude exists filter first following from
full glob group groups having in inner intersect is isnull join last left like limit match
materialized natural no not notnull null nulls offset on or order others outer over partition
preceding range recursive regexp right row rows select then ties unbounded union using values when
where window with true false rowid
""".split())

# SQLite's built-in scalar, aggregate, date, math and window functions (3.45).
SQLITE_FUNCTIONS = frozenset("""
abs changes char coalesce concat concat_ws format glob hex ifnull iif instr last_insert_rowid
length like likelihood likely load_extension lower ltrim max min nullif octet_length printf quote
random randomblob replace round rtrim sign soundex sqlite_version substr substring total_changes
trim typeof unhex unicode unlikely upper zeroblob avg count group_concat string_agg sum total
date time datetime julianday unixepoch strftime timediff acos acosh asin asinh atan atan2 atanh
ceil ceiling cos cosh degrees exp floor ln log log10 log2 mod pi pow power radians sin sinh sqrt
tan tanh trunc row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value
last_value nth_value json json_extract json_array json_object json_array_length json_type
""".split())

# Aliases in the Spider/BIRD style (T1, T2, ...) are always allowed: the model often uses them
# in SELECT before FROM defines them.
_ALIAS_PREFIX = re.compile(r"t\d*")
_ALIAS = re.compile(r"t\d+")
# Keywords after which the next word names a table.
_TABLE_CONTEXT = frozenset({"from", "join"})
# Keywords after which the next word defines a name (an alias, a CTE).
_DEFINING = frozenset({"as", "with", "recursive"})
# Quote characters: what closes them, and whether their content is an identifier to check.
_CLOSING = {"'": "'", '"': '"', "`": "`", "[": "]"}
_CHECKED_QUOTES = frozenset({"`", "["})


def _is_word_char(ch: str) -> bool:
    # As SQLite's tokenizer: every non-ASCII character can be part of an identifier.
    return ch.isalnum() or ch == "_" or not ch.isascii()


def _prefixes(words) -> frozenset[str]:
    return frozenset(w[:i] for w in words for i in range(1, len(w) + 1))


# --------------------------------------------------------------------------------------------
# What one database allows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchemaVocabulary:
    """The lower-cased names one database allows, with their prefixes precomputed.

    ``base_words`` (keywords, functions) are allowed anywhere, a table name where a table or a
    qualifier may stand, a column name where the query's scope lets it (see :class:`SqlScanner`);
    ``base_prefixes`` are the prefixes of keywords, functions and tables.
    """

    tables: frozenset[str]
    columns: frozenset[str]
    columns_of: dict[str, frozenset[str]] = field(hash=False, compare=False)
    base_words: frozenset[str] = frozenset()
    base_prefixes: frozenset[str] = frozenset()
    table_prefixes: frozenset[str] = frozenset()
    column_prefixes: frozenset[str] = frozenset()
    # tables in scope -> (their columns, prefixes of those): filled as queries need them
    _scope_cache: dict = field(default_factory=dict, hash=False, compare=False, repr=False)

    @classmethod
    def from_names(cls, columns_of: dict[str, Sequence[str]]) -> "SchemaVocabulary":
        """From ``{table: [column, ...]}`` (any case)."""
        by_table = {t.lower(): frozenset(c.lower() for c in cols) for t, cols in columns_of.items()}
        tables = frozenset(by_table)
        columns = frozenset().union(*by_table.values()) if by_table else frozenset()
        base = SQLITE_KEYWORDS | SQLITE_FUNCTIONS
        return cls(tables, columns, by_table, base, _prefixes(base | tables), _prefixes(tables),
                   _prefixes(columns))

    @classmethod
    def from_schema(cls, schema) -> "SchemaVocabulary":
        """From a :class:`nl2sql_lib.data.schema.DatabaseSchema`."""
        return cls.from_names({t.name: [c.name for c in t.columns] for t in schema.tables})

    def columns_in(self, tables: frozenset[str] | None) -> tuple[frozenset[str], frozenset[str]]:
        """The columns of ``tables`` (None: of every table) and their prefixes."""
        if tables is None:
            return self.columns, self.column_prefixes
        cached = self._scope_cache.get(tables)
        if cached is None:
            cols = frozenset().union(*(self.columns_of.get(t, frozenset()) for t in tables))
            cached = self._scope_cache[tables] = (cols, _prefixes(cols))
        return cached


@functools.lru_cache(maxsize=256)
def _vocabulary_of_file(path: str, _mtime: int) -> SchemaVocabulary:
    from .data.schema import read_schema

    return SchemaVocabulary.from_schema(read_schema(path, sample_values=0))


# A database file, its DatabaseSchema (nl2sql_lib.data.schema), or a ready vocabulary.
SchemaSource = Union[str, Path, SchemaVocabulary, Any]


def schema_vocabulary(source: SchemaSource) -> SchemaVocabulary:
    """The vocabulary of a database file (cached per file and modification time) or schema."""
    if isinstance(source, SchemaVocabulary):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source).resolve()
        return _vocabulary_of_file(str(path), path.stat().st_mtime_ns)
    return SchemaVocabulary.from_schema(source)


# --------------------------------------------------------------------------------------------
# The scanner: the state of one sequence's SQL, advanced character by character
# --------------------------------------------------------------------------------------------


class _Scope(NamedTuple):
    """One (sub)query being written: at which parenthesis depth, and its FROM tables."""

    depth: int
    tables: frozenset[str] | None = None  # None until its FROM is written
    open: bool = False  # it reads from a subquery or CTE: any column may be in scope


class SqlScanner:
    """Where a sequence's SQL is (in a word, in a quote, after which lexemes, in which
    (sub)query) and whether the text fed so far only names what the vocabulary allows.

    Bare words are checked by *kind*, decided when the word starts (:meth:`_start_word`):

    - ``free``: a number, or a word that already escaped the constraint;
    - ``define``: right after AS / WITH: a new name, recorded so the query can reuse it;
    - ``table``: right after FROM / JOIN: a table, or a name the query defined;
    - ``column``: right after ``x.``: a column of ``x``'s table (any column when unknown);
    - ``word``: a keyword, function, alias, a table used as a qualifier, or a column *in
      scope*: once the current query's FROM is written, unqualified columns must belong to its
      tables or to those of the queries around it (correlated subqueries); before that, to
      any table.

    ``accepts(text)`` asks about a continuation without changing the state; ``feed(text)``
    commits one. Copies are cheap because every container is replaced, never mutated.
    """

    def __init__(self, vocab: SchemaVocabulary):
        self.vocab = vocab
        self.quote: str | None = None  # the opening quote character we are inside
        self.word = ""  # the bare word (or checked quoted identifier) being written
        self.kind = ""  # how the current word is checked (see the class docstring)
        self.qualifier: str | None = None  # kind "column": the table of ``x.``, if known
        self.lexemes: tuple[str, ...] = ()  # the last 3 words (lower-cased) or punctuation marks
        self.defined: frozenset[str] = frozenset()  # names the query defined (after AS / WITH)
        self.bound: dict[str, str | None] = {}  # alias -> its table, for the current SELECT
        self.depth = 0  # open parentheses
        self.scopes: tuple[_Scope, ...] = ()  # the (sub)queries being written, outermost first

    # -- public ----------------------------------------------------------------------------

    def accepts(self, text: str) -> bool:
        """Could ``text`` come next? (The state is left unchanged.)"""
        return copy.copy(self).feed(text, strict=True)

    def accepts_end(self) -> bool:
        """Could the text end here (an end token)? Only outside an unfinished identifier."""
        return copy.copy(self).feed(" ", strict=True) if self.quote is None else True

    def feed(self, text: str, *, strict: bool = False) -> bool:
        """Advance over ``text``; False when it names something not allowed.

        ``strict``: stop at the first violation. Otherwise (committing a token the model did
        emit, maybe by the unconstrained fallback) carry on and stop checking the bad word.
        """
        ok = True
        for ch in text:
            if not self._feed_char(ch):
                ok = False
                if strict:
                    return False
                self.kind = "free"  # the word escaped the constraint: let it finish freely
        return ok

    # -- characters ------------------------------------------------------------------------

    def _feed_char(self, ch: str) -> bool:
        if self.quote is not None:
            return self._feed_quoted(ch)
        if _is_word_char(ch):
            if not self.word:
                self._start_word(ch)
            self.word += ch
            return self._word_ok(complete=False)
        ok = self._end_word(ch) if self.word else True
        if ch in _CLOSING:
            self.quote = ch
            if ch in _CHECKED_QUOTES:
                self._start_word(ch)
        elif ch == "(":
            self.depth += 1
            self._push(ch)
        elif ch == ")":
            self._close_paren()
        elif not ch.isspace():
            self._push(ch)
        return ok

    def _feed_quoted(self, ch: str) -> bool:
        if ch == _CLOSING[self.quote]:
            checked = self.quote in _CHECKED_QUOTES
            self.quote = None
            if checked:
                return self._end_word()
            self._push("'")  # a literal: counts as one lexeme
            return True
        if self.quote in _CHECKED_QUOTES:
            self.word += ch
            return self._word_ok(complete=False)
        return True

    def _close_paren(self) -> None:
        if self.scopes and self.scopes[-1].depth == self.depth and self.depth > 0:
            self.scopes = self.scopes[:-1]  # a subquery ends
        self.depth = max(0, self.depth - 1)
        self._push(")")

    # -- words -----------------------------------------------------------------------------

    def _start_word(self, first: str) -> None:
        """Decide from the lexemes before it how the new word is checked."""
        last = self.lexemes[-1] if self.lexemes else ""
        before = self.lexemes[-2] if len(self.lexemes) > 1 else ""
        self.qualifier = None
        if first in "0123456789" or last == "collate":
            self.kind = "free"  # a number, or a collation name (NOCASE, BINARY, ...)
        elif last == "." and before not in ("", "'", ")"):
            self.kind = "column"
            self.qualifier = self._table_of(before)
        elif last in _DEFINING:
            self.kind = "define"
        elif last in _TABLE_CONTEXT:
            self.kind = "table"
        else:
            self.kind = "word"

    def _table_of(self, qualifier: str) -> str | None:
        """The table a qualifier names: itself, or what it is bound to (None: unknown)."""
        if qualifier in self.bound:
            return self.bound[qualifier]
        return qualifier if qualifier in self.vocab.tables else None

    def _word_ok(self, *, complete: bool, next_char: str | None = None) -> bool:
        """The current word is allowed (``complete``: as a whole word, ended by ``next_char``;
        None when unknown) or can still become an allowed word."""
        w = self.word.lower()
        kind, vocab = self.kind, self.vocab
        if kind in ("free", "define"):
            return True
        if kind == "table":
            return self._in(w, vocab.tables, vocab.table_prefixes, complete)
        if kind == "column":
            known = self.qualifier is not None and self.qualifier in vocab.columns_of
            cols, prefixes = vocab.columns_in(frozenset({self.qualifier}) if known else None)
            return self._in(w, cols, prefixes, complete, with_defined=not known)
        if complete and next_char == ".":
            return self._qualifier_ok(w)
        if not complete and _ALIAS_PREFIX.fullmatch(w):
            return True
        if complete and _ALIAS.fullmatch(w) and self._alias_defined_here():
            return True
        if self._in(w, vocab.base_words, vocab.base_prefixes, complete):
            return True
        if complete and w in vocab.tables and self._bare_table_ok(next_char):
            return True
        cols, prefixes = vocab.columns_in(self._tables_in_scope())
        return self._in(w, cols, prefixes, complete, with_defined=False)

    def _qualifier_ok(self, w: str) -> bool:
        """``w.``: an alias, a defined name, or a table; once the query's FROM tables are
        known, a table must be one of them (``FROM student WHERE pets.x`` is an error)."""
        if _ALIAS.fullmatch(w) or w in self.bound or w in self.defined:
            return True
        in_scope = self._tables_in_scope()
        return w in self.vocab.tables and (in_scope is None or w in in_scope)

    def _alias_defined_here(self) -> bool:
        """A bare ``T1`` (not followed by a dot) only right after its table: ``FROM singer T1``."""
        return len(self.lexemes) > 1 and self.lexemes[-1] in self.vocab.tables \
            and self.lexemes[-2] in _TABLE_CONTEXT

    def _bare_table_ok(self, next_char: str | None) -> bool:
        """A table name outside FROM / JOIN: as a qualifier (``singer.``), or in a FROM list
        after a comma (``FROM a, b``). Elsewhere SQLite would read it as a missing column."""
        if next_char is None or next_char == ".":
            return True
        in_from = bool(self.scopes) and self.scopes[-1].tables is not None
        return in_from and bool(self.lexemes) and self.lexemes[-1] == ","

    def _in(self, w: str, words, prefixes, complete: bool, *, with_defined: bool = True) -> bool:
        """``w`` is one of ``words`` (complete) or starts one; names the query defined count too."""
        if complete:
            return w in words or (with_defined and w in self.defined)
        return w in prefixes or (with_defined and any(name.startswith(w) for name in self.defined))

    def _tables_in_scope(self) -> frozenset[str] | None:
        """The FROM tables of the queries being written (None: any table could be in scope)."""
        if not self.scopes or any(s.tables is None or s.open for s in self.scopes):
            return None
        return frozenset().union(*(s.tables for s in self.scopes))

    def _end_word(self, next_char: str | None = None) -> bool:
        """The current word is finished (by ``next_char``; None: by a closing quote): check it
        is complete, then record what it tells."""
        ok = self._word_ok(complete=True, next_char=next_char)
        w = self.word.lower()
        if self.kind == "define":
            self._define(w)
        elif self.kind == "table" or (self.kind == "word" and w in self.vocab.tables):
            self._add_to_scope(w)
        elif self.kind == "word" and w not in SQLITE_KEYWORDS and len(self.lexemes) > 1 \
                and self.lexemes[-1] in self.vocab.tables and self.lexemes[-2] in _TABLE_CONTEXT:
            self._bind(w, self.lexemes[-1])  # FROM singer T1: an alias without AS
        if w == "select":
            self._start_query()
        elif w == "from" and self.scopes and self.scopes[-1].tables is None:
            self.scopes = (*self.scopes[:-1], self.scopes[-1]._replace(tables=frozenset()))
        self._push(w)
        self.word, self.kind, self.qualifier = "", "", None
        return ok

    def _start_query(self) -> None:
        """SELECT: a new query at this depth (a subquery after "(", else the next compound part)."""
        self.bound = {}  # its aliases are bound by its own FROM
        last = self.lexemes[-1] if self.lexemes else ""
        before = self.lexemes[-2] if len(self.lexemes) > 1 else ""
        scopes = self.scopes
        if last == "(" and before in ("from", "join", ",") and scopes:
            scopes = (*scopes[:-1], scopes[-1]._replace(open=True))  # FROM (SELECT ...)
        if scopes and scopes[-1].depth == self.depth:
            scopes = scopes[:-1]  # UNION / EXCEPT / INTERSECT: the previous part is done
        self.scopes = (*scopes, _Scope(self.depth))

    def _add_to_scope(self, name: str) -> None:
        """A table named while the current query's FROM is open joins its scope."""
        if not self.scopes or self.scopes[-1].tables is None:
            return
        top = self.scopes[-1]
        if name in self.vocab.tables:
            top = top._replace(tables=top.tables | {name})
        else:  # a CTE or another defined name: its columns are unknown
            top = top._replace(open=True)
        self.scopes = (*self.scopes[:-1], top)

    def _define(self, name: str) -> None:
        self.defined = self.defined | {name}
        before = self.lexemes[-2] if len(self.lexemes) > 1 else ""
        if self.lexemes and self.lexemes[-1] == "as":
            # singer AS T1 binds T1 to singer; (SELECT ...) AS T1 or x AS total to nothing known
            self._bind(name, before if before in self.vocab.tables else None)

    def _bind(self, alias: str, table: str | None) -> None:
        self.bound = {**self.bound, alias: table}

    def _push(self, lexeme: str) -> None:
        self.lexemes = (*self.lexemes[-2:], lexeme)


# --------------------------------------------------------------------------------------------
# Token texts and the logits processor
# --------------------------------------------------------------------------------------------

_TOKEN_TEXTS: dict[int, tuple[object, list[str | None]]] = {}


def token_texts(tokenizer) -> list[str | None]:
    """The text every token id adds (None for special tokens), computed once per tokenizer."""
    cached = _TOKEN_TEXTS.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    special = set(tokenizer.all_special_ids)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    texts = [
        None if i in special or piece is None else tokenizer.convert_tokens_to_string([piece])
        for i, piece in enumerate(pieces)
    ]
    _TOKEN_TEXTS[id(tokenizer)] = (tokenizer, texts)  # keeps the tokenizer alive: ids stay unique
    return texts


class SchemaConstrainedLogitsProcessor(LogitsProcessor):
    """Mask tokens that would name a table or column the row's database does not have.

    ``vocabularies`` has one entry per row of the batch, in ``generate``'s row order (with
    ``num_return_sequences=k`` each prompt's entry repeated k times); None leaves a row free.
    ``first_valid_only``: keep only the best valid token (enough for greedy decoding, where
    it saves checking the rest of the top-k).

    ``widen``: when no top-k token is valid, look further down (see the module docstring).

    ``stats`` counts steps checked, ``changed`` (the top token was invalid and another won),
    ``widened`` (a valid token was found only beyond the top-k) and ``fallback`` (none was
    found; the step ran unconstrained).
    """

    def __init__(self, tokenizer, vocabularies: Sequence[SchemaVocabulary | None], *,
                 top_k: int = 48, first_valid_only: bool = False, widen: bool = True):
        self.texts = token_texts(tokenizer)
        self.scanners = [SqlScanner(v) if v is not None else None for v in vocabularies]
        self.top_k = top_k
        self.first_valid_only = first_valid_only
        self.widen = widen
        self.seen: int | None = None  # sequence length already fed to the scanners
        self.stats = {"steps": 0, "changed": 0, "widened": 0, "fallback": 0}

    def __call__(self, input_ids, scores):
        import torch

        if len(self.scanners) != input_ids.shape[0]:
            raise ValueError(
                f"SchemaConstrainedLogitsProcessor has {len(self.scanners)} vocabularies for a "
                f"batch of {input_ids.shape[0]} rows; give one per row (prompts x candidates)"
            )
        self._catch_up(input_ids)
        k = min(self.top_k, scores.shape[-1])
        values, indices = torch.topk(scores, k, dim=-1)
        values, indices = values.tolist(), indices.tolist()
        mask = torch.zeros_like(scores, dtype=torch.bool)  # True: masked
        for row, scanner in enumerate(self.scanners):
            if scanner is None:
                continue
            keep = self._valid(scanner, indices[row], values[row])
            if not keep and self.widen:
                keep = self._search_further(scanner, scores[row], k)
                self.stats["widened"] += bool(keep)
            self.stats["steps"] += 1
            if not keep:
                self.stats["fallback"] += 1
                continue
            if keep[0] != indices[row][0]:
                self.stats["changed"] += 1
            mask[row] = True
            mask[row, keep] = False
        return scores.masked_fill(mask, float("-inf"))

    def _catch_up(self, input_ids) -> None:
        """Feed each row's scanner the tokens generated since the last call."""
        length = input_ids.shape[1]
        if self.seen is None:  # first call: everything so far is the (left-padded) prompt
            self.seen = length
            return
        new = input_ids[:, self.seen:].tolist()
        self.seen = length
        for row, tokens in enumerate(new):
            for token in tokens:
                if self.scanners[row] is None:
                    break
                text = self.texts[token] if token < len(self.texts) else None
                if text is None:  # the end token (or padding after a stop): the row is done
                    self.scanners[row] = None
                else:
                    self.scanners[row].feed(text)

    def _search_further(self, scanner: SqlScanner, row_scores, skip: int) -> list[int]:
        """Valid tokens below the top ``skip``, best first: up to ``top_k`` of them (one when
        ``first_valid_only``). Rare, so the cost of sorting the whole row is fine."""
        values, indices = row_scores.sort(descending=True)
        return self._valid(scanner, indices[skip:].tolist(), values[skip:].tolist(), limit=self.top_k)

    def _valid(self, scanner: SqlScanner, candidates: list[int], values: list[float],
               limit: int | None = None) -> list[int]:
        """The candidates (best first) that keep the SQL within the schema (at most ``limit``)."""
        keep = []
        for token, value in zip(candidates, values):
            if value == float("-inf"):
                break  # another processor masked it (and everything below it)
            if token >= len(self.texts):
                continue  # padding of the embedding matrix: not a real token
            text = self.texts[token]
            ok = scanner.accepts_end() if text is None else scanner.accepts(text)
            if ok:
                keep.append(token)
                if self.first_valid_only or (limit is not None and len(keep) >= limit):
                    break
        return keep
