"""The SmolLM2 tokenizer read from the GGUF file ends turns with <|im_end|>, as the file says.

transformers 5.17 (the pinned release) takes the GGUF end token from bos_token_id; the project
reads the ids from the file's metadata instead (models._gguf_tokenizer). Without that, the tiny
and embedded models would end sequences with <|im_start|> and the reward model would score the
wrong token.
"""

import pytest
from gguf import GGUFReader

from nl2sql_lib.models import _gguf_tokenizer, embedded_gguf_path, load_tokenizer


def _metadata_id(reader: GGUFReader, role: str) -> int:
    field = reader.fields[f"tokenizer.ggml.{role}_token_id"]
    return int(field.parts[field.data[0]][0])


def test_special_tokens_follow_the_gguf_metadata():
    gguf = embedded_gguf_path()
    reader = GGUFReader(str(gguf))
    tokenizer = _gguf_tokenizer(gguf)
    assert tokenizer.eos_token_id == _metadata_id(reader, "eos")
    assert tokenizer.bos_token_id == _metadata_id(reader, "bos")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.bos_token == "<|im_start|>"


def test_tiny_model_ends_chat_turns_with_its_end_token():
    tokenizer = load_tokenizer("tiny:smollm2")
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "SELECT 1;"}], tokenize=True,
    )
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.eos_token_id in ids[-2:]  # the assistant's turn closes with the end token


def test_a_stale_unversioned_embedded_cache_is_never_read(tmp_path, monkeypatch):
    """A folder converted under transformers 5.17 before the GGUF end-token fix ends turns with
    <|im_start|>; the embedded cache is versioned, so such a folder is neither loaded as the
    embedded model nor used as SmolLM2's tokenizer (which the tiny model is built from)."""
    from transformers import AutoTokenizer

    from nl2sql_lib import models

    tokenizer = AutoTokenizer.from_pretrained(str(models.tiny_model_dir()))  # before the cache moves
    monkeypatch.setenv("NL2SQL_CACHE", str(tmp_path))
    stale = tmp_path / models.EMBEDDED_NAME  # where the old, unversioned conversion lived
    tokenizer.eos_token = "<|im_start|>"
    tokenizer.save_pretrained(stale)
    (stale / "config.json").write_text("{}")

    assert models.embedded_cache_dir().parent == tmp_path
    assert models.embedded_cache_dir() != stale and models.embedded_cache_dir().name.endswith("-v2")
    smollm2 = models._smollm2_tokenizer()
    assert smollm2.eos_token == "<|im_end|>"
    # the converted folder, once there, is what the tokenizer is read from
    fresh = models.embedded_cache_dir()
    smollm2.save_pretrained(fresh)
    monkeypatch.setattr(models, "_gguf_tokenizer", lambda gguf: pytest.fail("read the GGUF file again"))
    assert models._smollm2_tokenizer().eos_token == "<|im_end|>"
