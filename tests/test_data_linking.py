"""Schema-linking labels from gold SQL (sqlglot), resolving aliases, sub-queries and CTEs."""

from __future__ import annotations

import json

import pytest

from nl2sql_lib.data.linking import schema_links
from nl2sql_lib.data.schema import read_schema
from tests.fixtures.bird.build_fixture import build_bird_fixture


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    root = build_bird_fixture(tmp_path_factory.mktemp("bird"))
    return read_schema(root / "dev" / "dev_databases" / "debit_card" / "debit_card.sqlite", sample_values=0)


def test_aliases_resolve_to_tables_in_the_schemas_spelling(schema):
    links = schema_links(
        "SELECT SUM(t1.amount) FROM transactions_1k AS t1 INNER JOIN GasStations AS t2 "
        "ON t1.GasStationID = t2.GasStationID WHERE t2.Country = 'CZE'",
        schema,
    )
    assert links == {
        "tables": ["gasstations", "transactions_1k"],
        "columns": [
            "gasstations.Country", "gasstations.GasStationID",
            "transactions_1k.Amount", "transactions_1k.GasStationID",
        ],
    }


def test_unqualified_columns_subqueries_and_ctes(schema):
    links = schema_links(
        "WITH big AS (SELECT CustomerID FROM transactions_1k WHERE Price > 100) "
        "SELECT Segment FROM customers WHERE CustomerID IN (SELECT CustomerID FROM big) "
        "AND Currency = (SELECT MAX(Currency) FROM customers)",
        schema,
    )
    assert links["tables"] == ["customers", "transactions_1k"]
    assert links["columns"] == [
        "customers.Currency", "customers.CustomerID", "customers.Segment",
        "transactions_1k.CustomerID", "transactions_1k.Price",
    ]


def test_double_quoted_strings_and_unknown_names_are_not_columns(schema):
    # Spider writes string literals in double quotes; SQLite reads an unknown "name" as a string
    links = schema_links('SELECT count(*) FROM customers WHERE Segment = "SME"', schema)
    assert links == {"tables": ["customers"], "columns": ["customers.Segment"]}


def test_unparsable_sql_gives_empty_labels(schema):
    assert schema_links("SELEC FROM WHERE ((", schema) == {"tables": [], "columns": []}


@pytest.mark.spider
def test_every_usable_spider_dev_query_links_to_a_table(spider_dev):
    records = json.loads((spider_dev / "dev.json").read_text())
    unlinked = []
    for record in records:
        path = spider_dev / "database" / record["db_id"] / f"{record['db_id']}.sqlite"
        if not path.is_file():
            continue
        links = schema_links(record["query"], read_schema(path, sample_values=0))
        if not links["tables"]:
            unlinked.append(record["query"])
    assert unlinked == []
