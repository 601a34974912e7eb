"""What crosses between the judge and the candidate: plain data, one length-prefixed JSON
message at a time.

The judge (trusted tests) and the candidate (untrusted code) are separate processes, and a
value the candidate returns reaches the tests only as bytes that this module rebuilds into
*real* ``None``/``bool``/``int``/``float``/``str``/``list``/``tuple``/``dict``/``set``/
``frozenset`` objects: JSON parsing makes nothing else. An object with a spoofed
``__module__``, a patched ``__eq__`` or an ``int`` subclass cannot survive the trip, whatever
the candidate does to its own interpreter; it can only send a plain value, which the judge's
tests compare with their own, unpatched builtins. Anything that does not decode is an error
(a wrong answer), never a pass.

Stdlib only: the judge and candidate scripts import this file by path (``python -I -S``).
"""

import json
import os
import select
import struct
import time

HEADER = struct.Struct(">I")
MAX_MESSAGE = 8 << 20  # bytes: a reply beyond this is a wrong answer, not a memory bomb in the judge
_SCALARS = (bool, int, float, str)
_TAGS = {"tuple": tuple, "set": set, "frozenset": frozenset}


class WireError(Exception):
    """Bytes that are not a plain value, a message over MAX_MESSAGE, or a closed pipe."""


class WireTimeout(WireError):
    """The deadline passed before a whole message arrived."""


def to_json(value):
    """A plain value -> JSON-ready data; tuples, sets and dicts tagged so they come back as
    themselves (dict keys may be any hashable plain value). Exact types only: a subclass of
    int is not an int here."""
    kind = type(value)
    if value is None or kind in _SCALARS:
        return value
    if kind is list:
        return [to_json(v) for v in value]
    if kind is dict:
        return {"dict": [[to_json(k), to_json(v)] for k, v in value.items()]}
    for tag, tagged in _TAGS.items():
        if kind is tagged:
            return {tag: [to_json(v) for v in value]}
    raise TypeError(f"not plain data: {kind.__name__}")


def from_json(data):
    """JSON data (as ``json.loads`` makes it) -> the plain value; WireError for any other shape."""
    kind = type(data)
    if data is None or kind in _SCALARS:
        return data
    if kind is list:
        return [from_json(v) for v in data]
    if kind is dict and len(data) == 1:
        (tag, items), = data.items()
        if type(items) is list:
            try:
                if tag == "dict":
                    return {from_json(k): from_json(v) for k, v in _pairs(items)}
                if tag in _TAGS:
                    return _TAGS[tag](from_json(v) for v in items)
            except TypeError as exc:  # an unhashable key or set member
                raise WireError(f"bad {tag}: {exc}") from None
    raise WireError(f"not a plain value: {str(data)[:60]!r}")


def _pairs(items):
    for pair in items:
        if type(pair) is not list or len(pair) != 2:
            raise WireError("bad dict item")
        yield pair


def encode(value) -> bytes:
    return json.dumps(to_json(value), ensure_ascii=True, allow_nan=True).encode("ascii")


def decode(payload: bytes):
    try:
        data = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, nesting bombs, huge int literals
        raise WireError(f"undecodable: {type(exc).__name__}") from None
    try:
        return from_json(data)
    except RecursionError:
        raise WireError("nested too deep") from None


def send(fd: int, value) -> None:
    send_bytes(fd, encode(value))


def send_bytes(fd: int, payload: bytes) -> None:
    """One message whose payload is already encoded."""
    view = memoryview(HEADER.pack(len(payload)) + payload)
    while view:
        view = view[os.write(fd, view):]


def recv(fd: int, deadline: float | None = None):
    """The next message's value; WireTimeout past ``deadline`` (time.monotonic), WireError on
    EOF, an oversized message or bytes that are not a plain value."""
    size, = HEADER.unpack(_read_exact(fd, HEADER.size, deadline))
    if size > MAX_MESSAGE:
        raise WireError(f"message of {size} bytes (limit {MAX_MESSAGE})")
    return decode(_read_exact(fd, size, deadline))


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    out = bytearray()
    poller = select.poll()  # not select.select: a rollout worker's pipes can sit above fd 1023
    poller.register(fd, select.POLLIN)
    while len(out) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise WireTimeout("no reply before the deadline")
        chunk = os.read(fd, min(n - len(out), 1 << 20))
        if not chunk:
            raise WireError("pipe closed")
        out += chunk
    return bytes(out)
