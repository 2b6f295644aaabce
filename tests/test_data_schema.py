"""Schema introspection (read-only, cached, fast on big tables) and rendering under a budget."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from nl2sql_lib.config import SchemaParams
from nl2sql_lib.data.example import Example
from nl2sql_lib.data.schema import (
    MissingDatabase,
    approx_tokens,
    read_schema,
    render_schema,
    schema_text_for,
)
from tests.fixtures.bird.build_fixture import build_bird_fixture


@pytest.fixture()
def bird_dir(tmp_path) -> Path:
    return build_bird_fixture(tmp_path / "bird")


def _db(bird_dir: Path, name: str) -> Path:
    return bird_dir / "dev" / "dev_databases" / name / f"{name}.sqlite"


def test_read_schema_finds_tables_keys_samples_and_descriptions(bird_dir):
    schema = read_schema(_db(bird_dir, "debit_card"))
    assert [t.name for t in schema.tables] == ["customers", "gasstations", "transactions_1k"]
    tx = schema.table("transactions_1k")
    assert tx.primary_key == ("TransactionID",)
    assert {(fk.columns, fk.ref_table, fk.ref_columns) for fk in tx.foreign_keys} == {
        (("CustomerID",), "customers", ("CustomerID",)),
        (("GasStationID",), "gasstations", ("GasStationID",)),
    }
    assert tx.column("Price").type == "REAL"
    assert schema.table("customers").column("Segment").samples == ("SME", "LAM", "KAM")
    assert "Czech koruna" in schema.table("customers").column("Currency").description
    assert schema.n_columns == 13 and schema.n_foreign_keys == 2


def test_latin1_descriptions_and_composite_primary_keys(bird_dir):
    schema = read_schema(_db(bird_dir, "toxicology"))
    assert "double bond" in schema.table("bond").column("bond_type").description  # Latin-1 CSV
    assert schema.table("connected").primary_key == ("atom_id", "atom_id2")
    text = render_schema(schema)
    assert "PRIMARY KEY (atom_id, atom_id2)" in text
    assert "FOREIGN KEY (bond_id) REFERENCES bond(bond_id)" in text


def test_missing_database_raises_and_creates_nothing(tmp_path):
    path = tmp_path / "nope" / "nope.sqlite"
    with pytest.raises(MissingDatabase) as info:
        read_schema(path)
    assert str(path) in str(info.value)
    assert not path.exists() and not path.parent.exists()


def test_reading_is_read_only_and_cached(bird_dir):
    path = _db(bird_dir, "debit_card")
    before = (path.stat().st_mtime_ns, path.read_bytes())
    first = read_schema(path)
    assert read_schema(path) is first  # cached
    assert read_schema(path, sample_values=1) is not first  # other options, other entry
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before
    assert not list(path.parent.glob("*-journal")) and not list(path.parent.glob("*-wal"))


def _count_vm_steps(conn, steps):
    """Count SQLite virtual-machine steps (in thousands): deterministic, unlike wall time."""
    def tick():
        steps[0] += 1
        return 0
    conn.set_progress_handler(tick, 1000)
    return conn


def test_million_row_table_is_sampled_with_a_bounded_scan(tmp_path, monkeypatch):
    import nl2sql_lib.data.schema as schema_module

    path = tmp_path / "big.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, flag TEXT, value INTEGER, note TEXT)")
    # 'flag' holds one value in all rows: a plain DISTINCT ... LIMIT 3 must scan every row.
    # 'note' is NULL everywhere (sparse columns are common in BIRD): filtering NULLs before the
    # bounded scan would read the whole table looking for a value.
    conn.execute(
        "INSERT INTO big WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) "
        "SELECT i, 'same', i % 97, NULL FROM n"
    )
    conn.commit()
    full_scan = [0]
    _count_vm_steps(conn, full_scan).execute("SELECT DISTINCT flag FROM big LIMIT 3").fetchall()
    conn.close()

    sampling = [0]
    real_connect = schema_module.connect_readonly
    monkeypatch.setattr(schema_module, "connect_readonly",
                        lambda db_path: _count_vm_steps(real_connect(db_path), sampling))
    schema = read_schema(path)
    assert schema.table("big").column("flag").samples == ("same",)
    assert schema.table("big").column("value").samples == ("1", "2", "3")
    assert schema.table("big").column("note").samples == ()
    # Reading the whole schema, samples of all four columns included, costs a small fraction
    # of one full scan of the million-row table.
    assert full_scan[0] > 1000 and sampling[0] < full_scan[0] / 10, (sampling, full_scan)


def test_long_sample_values_are_cut(tmp_path):
    path = tmp_path / "long.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES (?)", ("x" * 500,))
    conn.commit()
    conn.close()
    (sample,) = read_schema(path, max_value_chars=20).table("notes").column("body").samples
    assert len(sample) == 20 and sample.endswith("...")


def test_create_table_and_compact_rendering(bird_dir):
    schema = read_schema(_db(bird_dir, "debit_card"))
    text = render_schema(schema)
    assert "CREATE TABLE customers (" in text
    assert "CustomerID INTEGER PRIMARY KEY" in text
    assert "FOREIGN KEY (CustomerID) REFERENCES customers(CustomerID)" in text
    assert "e.g. 'SME', 'LAM', 'KAM'" in text
    assert "total price = Amount x Price" in text
    assert "total price" not in render_schema(schema, include_descriptions=False)
    compact = render_schema(schema, style="compact")
    assert compact.splitlines()[0] == "customers(CustomerID, Segment, Currency)"
    assert "transactions_1k.CustomerID = customers.CustomerID" in compact
    with pytest.raises(ValueError, match="compact"):
        render_schema(schema, style="yaml")


def test_budget_drops_descriptions_then_samples_then_detail_then_tables(bird_dir):
    schema = read_schema(_db(bird_dir, "debit_card"))
    full = render_schema(schema)
    no_desc = render_schema(schema, include_descriptions=False)
    budget = approx_tokens(no_desc)
    text = render_schema(schema, max_tokens=budget)
    assert text == no_desc and approx_tokens(full) > budget  # descriptions went first
    one_sample = render_schema(schema, include_descriptions=False, sample_values=1)
    assert render_schema(schema, max_tokens=approx_tokens(one_sample)) == one_sample
    no_samples = render_schema(schema, include_descriptions=False, sample_values=0)
    assert "e.g." not in no_samples and "PRIMARY KEY" in no_samples
    assert render_schema(schema, max_tokens=approx_tokens(no_samples)) == no_samples
    compact = render_schema(schema, style="compact")
    assert render_schema(schema, max_tokens=approx_tokens(compact)) == compact
    tiny = render_schema(schema, max_tokens=25)
    assert approx_tokens(tiny) <= 25 and "more table(s) not shown" in tiny
    assert tiny.startswith("customers(")


def test_budget_uses_the_given_token_counter(bird_dir):
    schema = read_schema(_db(bird_dir, "debit_card"))
    words = lambda text: len(text.split())  # noqa: E731
    text = render_schema(schema, max_tokens=60, count_tokens=words)
    assert words(text) <= 60 and words(render_schema(schema)) > 60


def test_keep_prunes_to_linked_tables_and_columns_with_their_join_keys(bird_dir):
    schema = read_schema(_db(bird_dir, "debit_card"))
    text = render_schema(
        schema, style="compact",
        keep={"tables": ["customers"], "columns": ["transactions_1k.Price", "made_up.col"]},
    )
    lines = text.splitlines()
    assert lines[0] == "customers(CustomerID, Segment, Currency)"
    # Price plus the primary key and the foreign key joining it to customers
    assert lines[1] == "transactions_1k(TransactionID, CustomerID, Price)"
    assert "gasstations" not in text
    assert lines[2] == "Foreign keys: transactions_1k.CustomerID = customers.CustomerID"


def test_schema_text_for_an_example_follows_schema_params(bird_dir):
    example = Example("q", "debit_card", str(_db(bird_dir, "debit_card")), "How many?", "SELECT 1")
    text = schema_text_for(example, SchemaParams(style="compact", max_tokens=None))
    assert text.startswith("customers(CustomerID")
    text = schema_text_for(example, SchemaParams(sample_values=1, include_descriptions=False, max_tokens=None))
    assert "e.g. 'SME'" in text and "'LAM'" not in text and "Czech" not in text
    assert approx_tokens(schema_text_for(example, SchemaParams(max_tokens=64))) <= 64


def test_keep_never_leaves_a_table_without_columns(bird_dir):
    schema = read_schema(bird_dir / "train" / "train_databases" / "movie_platform" / "movie_platform.sqlite")
    # ratings has no primary key; its only linked column is not in the schema
    text = render_schema(schema, style="compact", keep={"columns": ["ratings.made_up"]})
    assert text == "ratings(movie_id, rating_score, user_id)"
