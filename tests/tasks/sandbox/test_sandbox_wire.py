"""The wire between judge and candidate (tasks/sandbox/wire.py): plain values survive the trip
as exactly themselves, and nothing else comes out of it but a WireError."""

from __future__ import annotations

import math
import os
import time

import pytest

from neuromas_dist.tasks.sandbox import wire


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 10 ** 40, 0.1, -0.0, float("inf"), "", "é\n\x00", [1, [2, [3]]],
    (1, (2.5, "x")), {"a": 1, 2: [3], (1, 2): None, True: "t"}, {1, 2, (3, 4)}, frozenset({"a"}),
    [(), [], {}, set()], {"nested": {"dict": [[1, 2]]}},  # a dict whose only key is a tag name stays a dict
])
def test_plain_values_come_back_as_themselves_with_their_exact_types(value):
    back = wire.decode(wire.encode(value))
    assert back == value and _types(back) == _types(value)


def _types(v):
    if isinstance(v, dict):
        return (dict, sorted((repr(k), _types(k), _types(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple, set, frozenset)):
        return (type(v), sorted(map(repr, map(_types, v))))
    return type(v)


def test_nan_crosses_as_nan():
    assert math.isnan(wire.decode(wire.encode(float("nan"))))


@pytest.mark.parametrize("value", [
    type("Spoof", (), {"__module__": "builtins", "__eq__": lambda s, o: True})(),
    type("Yes", (int,), {"__eq__": lambda s, o: True})(0),  # a subclass of int is not an int
    type("L", (list,), {})([1]), b"bytes", 1j, object(), [1, object()], {"k": len},
])
def test_anything_but_plain_data_is_refused_on_the_way_out(value):
    with pytest.raises(TypeError):
        wire.encode(value)


@pytest.mark.parametrize("payload", [
    b"\xff\xfe", b"{", b'{"ok": 1, "extra": 2}', b'{"object": []}', b'{"dict": [[1]]}', b'{"set": [[1]]}',
    b'{"dict": [[[1], 2]]}', b'{"tuple": 5}', b"[" * 100_000 + b"]" * 100_000, b"1" * 5000,
])
def test_bytes_that_are_not_a_plain_value_are_a_wire_error(payload):
    with pytest.raises(wire.WireError):
        wire.decode(payload)


def test_framing_refuses_an_oversized_message_and_a_closed_pipe_and_times_out():
    r, w = os.pipe()
    try:
        os.write(w, wire.HEADER.pack(wire.MAX_MESSAGE + 1))
        with pytest.raises(wire.WireError, match="limit"):
            wire.recv(r)
        wire.send(w, {"ok": [1, 2]})
        assert wire.recv(r, time.monotonic() + 1) == {"ok": [1, 2]}
        t0 = time.monotonic()
        with pytest.raises(wire.WireTimeout):
            wire.recv(r, time.monotonic() + 0.2)
        assert time.monotonic() - t0 < 1.0
    finally:
        os.close(w)
    with pytest.raises(wire.WireError, match="closed"):
        wire.recv(r)
    os.close(r)
