"""`_members`, the SQLite store's top-level member scanner (the transaction path of `update_state` and the 0.0.3
migration merge a state's text with it instead of decoding it), fuzzed against `json.loads` / `encode_json` on random
nested states whose keys and strings hold quotes, backslashes, brackets, braces, colons, commas, control characters,
non-BMP characters and lone surrogates, written canonically and in every other way JSON allows (any whitespace, any
escape, `\\uXXXX` for any character, repeated keys)."""

import json, random

import pytest
from hypothesis import given, settings, strategies as st

from cjm_workflow_state.backends.sqlite import _members
from cjm_workflow_state.core.base import encode_json, item_text, join_items

TRICKY = st.lists(
    st.sampled_from(list('"\\[]{}:,/ ax\x00\n\t\x1f\x7fé\u2028\ud800\udfff\U0001f600') + ["\\u0022", '\\"']), max_size=8
).map("".join)  # '\\u0022', '\\"': a backslash before text that reads as an escape
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TRICKY
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TRICKY, inner, max_size=4), max_leaves=25
)
STATES = st.dictionaries(TRICKY, VALUES, max_size=6)

SHORT = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def u_escape(c: str) -> str:
    "A character as \\uXXXX (a surrogate pair beyond the BMP)."
    n = ord(c)
    if n < 0x10000:
        return f"\\u{n:04x}" if n % 2 else f"\\u{n:04X}"
    n -= 0x10000
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"


def dump_string(s: str, rng: random.Random) -> str:
    out = []
    for c in s:
        must = c in '"\\' or ord(c) < 0x20
        choice = rng.random()
        if c in SHORT and choice < 0.5:
            out.append(SHORT[c])
        elif must or choice < 0.3:
            out.append(u_escape(c))
        else:
            out.append(c)  # as it is: brackets, quotes escaped above, non-ASCII, lone surrogates
    return '"' + "".join(out) + '"'


def dump(value, rng: random.Random) -> str:
    "Any valid JSON text of `value`: random whitespace and escapes."
    ws = lambda: rng.choice(["", "", " ", "\n", "\t", "\r\n  "])
    if isinstance(value, dict):
        if not value:
            return "{" + ws() + "}"
        return (
            "{"
            + ",".join(ws() + dump_string(k, rng) + ws() + ":" + ws() + dump(v, rng) + ws() for k, v in value.items())
            + "}"
        )
    if isinstance(value, list):
        if not value:
            return "[" + ws() + "]"
        return "[" + ",".join(ws() + dump(v, rng) + ws() for v in value) + "]"
    if isinstance(value, str):
        return dump_string(value, rng)
    return json.dumps(value)


@settings(max_examples=400, deadline=None)
@given(STATES)
def test_canonical_text_splits_into_the_encoded_members(state):
    text = encode_json(state)
    members = _members(text)
    # keys as JSON reads them back: a lone high surrogate then a lone low one is one character ('\U000103ff')
    expected = {json.loads(encode_json(k)): encode_json(v) for k, v in state.items()}
    assert members == expected and list(members) == list(expected)
    assert list(members) == list(json.loads(text))
    if len(expected) == len(state):  # no two keys read back the same
        assert join_items(item_text(k, v) for k, v in members.items()) == text  # merging texts gives canonical text


@settings(max_examples=400, deadline=None)
@given(STATES, st.integers(0, 2**32))
def test_any_valid_text_splits_like_json_loads(state, seed):
    rng = random.Random(seed)
    text = rng.choice(["", " ", "\n"]) + dump(state, rng) + rng.choice(["", " ", "\r\n"])
    expected = json.loads(text)
    assert len(expected) <= len(state)  # valid JSON (json.loads read it), of these keys
    members = _members(text)
    assert list(members) == list(expected)
    assert {k: json.loads(v) for k, v in members.items()} == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(TRICKY, VALUES), max_size=6), st.integers(0, 2**32))
def test_repeated_keys_as_json_loads(pairs, seed):
    "A key written twice: its last value, at its first place, as json.loads reads it."
    rng = random.Random(seed)
    pairs = pairs + pairs[: rng.randint(0, len(pairs))]  # some keys again, with their values (or others below)
    pairs = [(k, v if rng.random() < 0.5 else [v]) for k, v in pairs]
    text = "{" + ",".join(dump_string(k, rng) + ":" + dump(v, rng) for k, v in pairs) + "}"
    expected = json.loads(text)
    members = _members(text)
    assert list(members) == list(expected)
    assert {k: json.loads(v) for k, v in members.items()} == expected


@settings(max_examples=200, deadline=None)
@given(VALUES.filter(lambda v: not isinstance(v, dict)) | st.tuples(STATES, STATES), st.integers(0, 2**32))
def test_anything_but_one_object_is_refused(value, seed):
    rng = random.Random(seed)
    text = (
        dump(value[0], rng) + rng.choice(["", " "]) + dump(value[1], rng)
        if isinstance(value, tuple)
        else dump(value, rng)
    )
    with pytest.raises(ValueError):
        _members(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"a":1',
        '{"a":1}]',
        '{"a":[1}',
        '{"a":"}',
        '{"a\\":1}',
        "",
        "   ",
        "{",
        "}",
        '{"a"}',
        '{"a":}',
        '{"a":1,}',
        "{,}",
        '{"a" "b":1}',
        "{:1}",
        '{"a"::1}',
        'x{"a":1}',
        '{"a":1,,"b":2}',
        '[{"a":1}]',
        '{"a":1}{}',
        '{"a":1} x',
    ],
)
def test_truncated_or_unbalanced_text_is_refused(text):
    with pytest.raises(ValueError):
        _members(text)


def test_deep_values_are_never_parsed():
    "A value nested far deeper than json.loads (or the interpreter's stack) allows: split as text."
    deep = "[" * 200_000 + '"]}{,:"' + "]" * 200_000
    text = '{"a":' + deep + ',"b\\"[":{"c":' + deep + "}}"
    assert _members(text) == {"a": deep, 'b"[': '{"c":' + deep + "}"}


@pytest.mark.parametrize("json_merge", [True, False])  # the statement path where it applies, and the transaction path
def test_a_key_that_would_read_back_as_another_is_refused(json_merge):
    """'\\ud800\\udfff' (two lone surrogates) would be written as the JSON text of '\\U000103ff' and read back as
    that one character: the store refuses it (at the top level and in a step's state) and writes nothing, so the
    stored text never holds a key twice and every key reads back as itself."""
    from cjm_workflow_state.backends.sqlite import SQLiteWorkflowStateStore
    from cjm_workflow_state import StateNotSerializableError

    with SQLiteWorkflowStateStore(":memory:") as store:
        store._json_merge = store._json_merge and json_merge
        store.update_state("f", "s", {"\U000103ff": 1, "x": "y"})
        before = store._get_state_text("f", "s", None)
        with pytest.raises(StateNotSerializableError, match="surrogate"):
            store.update_state("f", "s", {"\ud800\udfff": 2, "x": "z"})
        with pytest.raises(StateNotSerializableError, match="surrogate"):
            store.update_step_state("f", "s", "step", {"\ud800\udfff": 2})
        assert store._get_state_text("f", "s", None) == before == encode_json({"\U000103ff": 1, "x": "y"})
