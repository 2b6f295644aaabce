"""Attention over a shared prompt prefix stored once per group, for fast greedy decoding (issue #13).

06_eval asks many questions about one database: their prompts share the system message and the
schema (about 90% of the tokens) and differ only in the question. The fast greedy path of
:mod:`nl2sql_lib.generate` computes that prefix once per database; this module is how a decode
batch then attends to it without copying it per row.

A batch of rows from a few prefix groups keeps:

- each group's prefix keys and values once (``[kv_heads, prefix_len, head_dim]``, float32);
- each row's own columns (question tokens, then its answer) in a buffer allocated once per batch
  (``[rows, kv_heads, capacity, head_dim]``), written in place step by step - no per-step
  concatenation of the whole cache, as ``DynamicCache`` does.

Attention for a row is the softmax over [its group's prefix | its own columns], computed as one
softmax over concatenated scores, so the result is ordinary attention, only summed in another
order. Grouped-query heads are handled by reshaping the queries (``[rows, kv_heads, group *
tokens, head_dim]``) instead of repeating keys and values per query head (transformers'
``repeat_kv``, which with a mask copies the whole cache three times over for SmolLM2 every step).
The prefix's scores for all rows of a group come from one matrix product, so the prefix is read
once per group and step rather than once per row.

It plugs into transformers through its attention interface: the model runs with the registered
implementation :data:`ATTENTION_NAME` (:func:`shared_prefix_attention_on`) and receives the
batch's :class:`SharedPrefixBatch` as the ``shared_prefix`` keyword of its forward call, which
transformers hands to every attention layer. No cache object is passed, so the model's own
cache and mask machinery stay out of the way; positions are given explicitly.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

ATTENTION_NAME = "nl2sql_shared_prefix"

# Model families whose attention layers call the attention interface with (queries, keys,
# values) after rotary embedding and nothing else applied in the kernel (no soft-capping, no
# sinks, no sliding window): for them this module's attention is exactly the model's.
SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")


def supports_shared_prefix(model: Any) -> bool:
    """Whether :class:`SharedPrefixBatch` attention is exact for this model."""
    config = model.config
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    if getattr(text, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return False
    layer_types = getattr(text, "layer_types", None)
    if layer_types and any(t != "full_attention" for t in layer_types):
        return False
    sliding = getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True)
    return not sliding and not getattr(text, "attn_logit_softcapping", None)


class SharedPrefixBatch:
    """The keys and values one decode batch attends to.

    ``prefixes``: by group (a list or a dict), per layer, ``(keys, values)`` of the group's
    prefix, each ``[kv_heads, prefix_len, head_dim]`` (``prefix_len`` may be 0). ``row_groups``: the group
    of each row; rows of one group must be contiguous (the decoder sorts them so), which lets a
    group's rows be a slice. ``capacity``: the most own columns a row will get (its question
    tokens plus the new tokens).
    """

    def __init__(self, prefixes: Any, row_groups: Sequence[int], capacity: int):
        self.prefixes = prefixes
        self.capacity = capacity
        self.length = 0  # own columns written so far (the same for every row: rows are left-padded)
        self.keys: dict[int, Any] = {}  # layer -> [rows, kv_heads, capacity, head_dim] float32
        self.values: dict[int, Any] = {}
        self.valid = None  # [rows, capacity] bool: which own columns hold a real token
        self._set_rows(list(row_groups))
        self._start = self._end = 0
        self._bias = None

    def _set_rows(self, row_groups: list[int]) -> None:
        self.row_groups = row_groups
        self.group_slices: list[tuple[int, slice]] = []
        start = 0
        for row in range(1, len(row_groups) + 1):
            if row == len(row_groups) or row_groups[row] != row_groups[start]:
                self.group_slices.append((row_groups[start], slice(start, row)))
                start = row
        seen = [g for g, _ in self.group_slices]
        if len(seen) != len(set(seen)):
            raise ValueError("SharedPrefixBatch: the rows of each group must be contiguous")
        self.longest_prefix = max((self.prefixes[g][0][0].shape[1] for g in seen), default=0)

    def begin_step(self, real_tokens) -> None:
        """Before a forward call over ``real_tokens.shape[1]`` new columns per row: which of them
        are real tokens (``[rows, new]`` bool; False for left padding). Builds the additive mask
        every layer of this call shares: a query sees its group's whole prefix, and those of its
        own columns that hold real tokens and come no later than itself (and always itself, so
        that a padding query has something to attend to and stays finite)."""
        import torch

        rows, new = real_tokens.shape
        self._start, self._end = self.length, self.length + new
        if self._end > self.capacity:
            raise ValueError(f"SharedPrefixBatch: {self._end} own columns, capacity {self.capacity}")
        if self.valid is None:
            self.valid = torch.zeros((rows, self.capacity), dtype=torch.bool, device=real_tokens.device)
        self.valid[:, self._start : self._end] = real_tokens
        columns = torch.arange(self._end, device=real_tokens.device)
        query_columns = torch.arange(self._start, self._end, device=real_tokens.device)
        causal = columns[None, :] <= query_columns[:, None]  # [new, end]
        allowed = causal[None] & self.valid[:, None, : self._end]  # [rows, new, end]
        allowed |= (columns[None, :] == query_columns[:, None])[None]
        bias = torch.zeros(allowed.shape, dtype=torch.float32, device=real_tokens.device)
        self._bias = bias.masked_fill_(~allowed, float("-inf"))[:, None, None]  # [rows, 1, 1, new, end]
        self.length = self._end

    def keep_rows(self, rows) -> None:
        """Drop every row not in ``rows`` (a 1-D index tensor, in order; groups stay contiguous)."""
        self.keys = {layer: k.index_select(0, rows) for layer, k in self.keys.items()}
        self.values = {layer: v.index_select(0, rows) for layer, v in self.values.items()}
        self.valid = self.valid.index_select(0, rows)
        self._set_rows([self.row_groups[r] for r in rows.tolist()])

    def _append(self, layer: int, key, value):
        """Write this call's keys/values into the layer's buffer; the filled columns' views."""
        import torch

        if layer not in self.keys:  # first call: allocate the layer's buffers
            shape = (key.shape[0], key.shape[1], self.capacity, key.shape[3])
            self.keys[layer] = torch.zeros(shape, dtype=torch.float32, device=key.device)
            self.values[layer] = torch.zeros(shape, dtype=torch.float32, device=key.device)
        self.keys[layer][:, :, self._start : self._end] = key
        self.values[layer][:, :, self._start : self._end] = value
        return self.keys[layer][:, :, : self._end], self.values[layer][:, :, : self._end]

    def attend(self, layer: int, query, key, value, scaling: float):
        """Attention output ``[rows, new, heads, head_dim]`` (the layout transformers' attention
        functions return) for ``query`` ``[rows, heads, new, head_dim]`` and this call's
        ``key``/``value`` ``[rows, kv_heads, new, head_dim]``."""
        import torch

        rows, heads, new, dim = query.shape
        kv_heads = key.shape[1]
        group = heads // kv_heads  # query heads per key/value head, adjacent as repeat_kv lays them out
        own_keys, own_values = self._append(layer, key, value)
        # [rows, kv_heads, group * new, dim]: the queries that share a key/value head, stacked
        q = query.float().reshape(rows, kv_heads, group * new, dim)
        own = torch.matmul(q, own_keys.transpose(-1, -2)).mul_(scaling)
        own = (own.view(rows, kv_heads, group, new, self._end) + self._bias).view(rows, kv_heads, group * new, -1)
        prefix = q.new_full((rows, kv_heads, group * new, self.longest_prefix), float("-inf"))
        for g, part in self.group_slices:
            prefix_keys = self.prefixes[g][layer][0]  # [kv_heads, P, dim]
            if prefix_keys.shape[1]:
                prefix[part, :, :, : prefix_keys.shape[1]] = self._per_group(q[part], prefix_keys.transpose(-1, -2)).mul_(scaling)
        weights = torch.softmax(torch.cat([prefix, own], dim=-1), dim=-1)
        out = torch.matmul(weights[..., self.longest_prefix :], own_values)
        for g, part in self.group_slices:
            prefix_values = self.prefixes[g][layer][1]
            if prefix_values.shape[1]:
                out[part] += self._per_group(weights[part, :, :, : prefix_values.shape[1]], prefix_values)
        return out.view(rows, kv_heads, group, new, dim).reshape(rows, heads, new, dim).transpose(1, 2).to(query.dtype)

    @staticmethod
    def _per_group(left, right):
        """``left`` [n, kv_heads, m, k] times ``right`` [kv_heads, k, p] for all n rows in one
        product per head: [n, kv_heads, m, p]. The right side (the group's prefix) is read once."""
        import torch

        n, kv_heads, m, k = left.shape
        stacked = left.transpose(0, 1).reshape(kv_heads, n * m, k)
        return torch.matmul(stacked, right).view(kv_heads, n, m, -1).transpose(0, 1)


def shared_prefix_attention(module, query, key, value, attention_mask, *, scaling: float | None = None,
                            dropout: float = 0.0, shared_prefix: SharedPrefixBatch | None = None, **kwargs):
    """The attention function registered as :data:`ATTENTION_NAME` (transformers' signature)."""
    if shared_prefix is None:
        raise RuntimeError(
            f"attention '{ATTENTION_NAME}' needs the batch's SharedPrefixBatch as the forward call's "
            "shared_prefix= keyword; it is only meant for nl2sql_lib.generate's fast greedy path"
        )
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return shared_prefix.attend(module.layer_idx, query, key, value, scale), None


@contextmanager
def shared_prefix_attention_on(model) -> Iterator[None]:
    """Run ``model`` with :func:`shared_prefix_attention` inside the block; its own attention
    implementation is restored afterwards (also on error)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION_NAME)
    if model.config._attn_implementation != ATTENTION_NAME:
        # transformers only warns when a model cannot switch: it would then ignore the batch's
        # keys and values and answer from nothing - never silently
        model.set_attn_implementation(previous)
        raise RuntimeError(f"{type(model).__name__} cannot switch its attention implementation to "
                           f"'{ATTENTION_NAME}'; generate with Generator(fast=False)")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
