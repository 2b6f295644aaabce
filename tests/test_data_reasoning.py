"""Reasoning data with a scripted teacher: only reasoning whose SQL reaches the gold result stays."""

from __future__ import annotations

import sys

import pytest

from nl2sql_lib.data.loaders import load_source
from nl2sql_lib.config import SourceParams
from nl2sql_lib.data.prompts import sql_answer
from nl2sql_lib.data.reasoning import (
    generate_reasoning,
    local_teacher,
    make_teacher,
    openai_teacher,
    split_reasoning,
    teacher_messages,
)
from tests.fixtures.bird.build_fixture import build_bird_fixture


@pytest.fixture()
def bird_dev(tmp_path):
    root = build_bird_fixture(tmp_path / "bird")
    return load_source(SourceParams(type="bird", path=str(root)), tmp_path)["dev"]


def _answer(steps: str, sql: str) -> str:
    return f"Let me think through this step by step:\n{steps}\n\nFinally, the SQL statement for the text question is:\n```sql\n{sql}\n```\n"


def test_teacher_prompt_shows_schema_evidence_question_and_gold_sql(bird_dev):
    messages = teacher_messages(bird_dev[0], "customers(CustomerID, Segment, Currency)")
    user = messages[-1]["content"]
    for part in ("customers(CustomerID", "Currency = 'CZK'", bird_dev[0].question, bird_dev[0].sql):
        assert part in user
    assert "```sql" in user and "step by step" in user
    no_evidence = teacher_messages(bird_dev[2], "s")[-1]["content"]
    assert "-- External Knowledge: none" in no_evidence


def test_split_reasoning_separates_the_steps_from_the_final_sql():
    reasoning, sql = split_reasoning(_answer("1. Count customers.\n2. Filter SME.", "SELECT 1;"))
    assert reasoning == "Let me think through this step by step:\n1. Count customers.\n2. Filter SME."
    assert sql == "SELECT 1"
    assert split_reasoning("I am not sure.")[1] == ""


def test_only_reasoning_that_executes_to_the_gold_result_is_kept(bird_dev):
    script = {
        # equivalent rewrite of the gold: kept (the recipe's string match would drop it)
        bird_dev[0].question: _answer(
            "1. customers in SME paying CZK.", "SELECT count(*) FROM customers AS c WHERE c.Segment = 'SME' AND c.Currency = 'CZK'"
        ),
        # wrong result: dropped
        bird_dev[1].question: _answer("1. Sum everything.", "SELECT SUM(Amount) FROM transactions_1k"),
        # no SQL at the end: dropped
        bird_dev[2].question: "The segment with the highest price.",
        # the teacher fails: counted, others go on
        bird_dev[3].question: RuntimeError("rate limited"),
        bird_dev[4].question: _answer("1. Join molecule and bond.", bird_dev[4].sql),
    }
    calls = []

    def teacher(messages):
        calls.append(messages)
        question = next(q for q in script if q in messages[-1]["content"])
        reply = script[question]
        if isinstance(reply, Exception):
            raise reply
        return reply

    kept, report = generate_reasoning(bird_dev, teacher)
    assert len(calls) == 5
    assert [e.question_id for e in kept] == ["bird-dev-0", "bird-dev-4"]
    assert kept[0].reasoning == "Let me think through this step by step:\n1. customers in SME paying CZK."
    assert bird_dev[0].reasoning is None  # the inputs are not modified
    assert report["tried"] == 5 and report["kept"] == 2
    assert (report["wrong_result"], report["no_sql"], report["teacher_error"]) == (1, 1, 1)
    assert report["rejected"]["wrong_result"] == ["bird-dev-1"]
    assert "rate limited" in report["rejected"]["teacher_error"][0]
    # the kept reasoning becomes the <think> block of the training target, gold SQL after it
    target = sql_answer(kept[0], reasoning=True)
    assert target.startswith("<think>\nLet me think") and target.endswith("</think>\n" + kept[0].sql + ";")


def test_limit_and_missing_databases(bird_dev):
    bird_dev[0].extra["missing_db"] = True
    kept, report = generate_reasoning(bird_dev, lambda m: "no", limit=3)
    assert report["missing_db"] == 1 and report["tried"] == 2 and kept == []


def test_openai_teacher_without_the_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)  # import openai now raises ImportError
    with pytest.raises(RuntimeError, match="pip install"):
        openai_teacher("some-model")


def test_make_teacher_checks_its_parameters():
    assert make_teacher("none", None) is None
    with pytest.raises(ValueError, match="reasoning_teacher_model"):
        make_teacher("local", None)


class _ChatCompletionsServer:
    """An OpenAI-compatible endpoint on the loopback interface: answers POST /chat/completions
    with a scripted reply and records each request body; stops when the ``with`` block ends."""

    def __init__(self, reply: str):
        import http.server
        import json
        import threading

        self.requests: list[dict] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                payload = json.dumps({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": reply}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def test_openai_teacher_talks_to_an_openai_compatible_endpoint(bird_dev, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # the request must reach the loopback server
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    gold = bird_dev[4]
    with _ChatCompletionsServer(_answer("1. Join molecule and bond.", gold.sql)) as server:
        teacher = openai_teacher("teacher-model", base_url=server.url, api_key="sk-test", max_tokens=77)
        kept, report = generate_reasoning([gold], teacher)
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    assert request["model"] == "teacher-model" and request["max_tokens"] == 77 and request["temperature"] == 0.0
    assert request["messages"][0]["role"] == "system" and gold.sql in request["messages"][-1]["content"]
    assert report["kept"] == 1 and kept[0].reasoning.endswith("1. Join molecule and bond.")


@pytest.mark.slow
def test_local_teacher_generates_with_a_transformers_model(bird_dev):
    teacher = local_teacher("tiny:smollm2", max_new_tokens=24)
    messages = [{"role": "user", "content": "Write SQL: how many customers?"}]
    first = teacher(messages)
    assert isinstance(first, str) and first  # a random tiny model writes tokens, not SQL
    assert teacher(messages) == first  # greedy, loaded once and reused
    kept, report = generate_reasoning(bird_dev[:2], teacher)
    # its text holds no SQL that reaches the gold result, so nothing is kept, and nothing crashes
    assert report["tried"] == 2 and report["kept"] == 0 and report["teacher_error"] == 0
