"""What crosses the pipes between the sandbox's judge D and its worker W: plain data only.

Standard library only, and never imported in the sandbox: `rlvr.verify.sandbox`
compiles it with `sandbox_isolation.py` and `sandbox_driver.py` and D runs the three in
one namespace. A value crosses as tagged JSON (None, bool, int, float, str, bytes,
list, tuple, dict, set, frozenset, complex) in length-prefixed frames, and `_dec`
rebuilds exact built-in types from whatever W sent, so D never holds an object W made
(an ``__eq__`` that is always True cannot cross). Frames and nesting are capped, and
D's reads and writes take the run's deadline (W's wait for D).
"""

import json
import os
import select

_FRAME_MAX = 8 << 20  # the largest message W may send D (bytes)
_DEPTH_MAX = 100  # nesting of values crossing the pipe


# BaseException: test code that catches Exception must not swallow it.
class _Timeout(BaseException):
    pass


def _enc(x, depth=0):
    """A value as tagged JSON data; built-in types only (subclasses become their base)."""
    if depth > _DEPTH_MAX:
        raise ValueError("value nested too deeply")
    if x is None or x is True or x is False:
        return x
    if isinstance(x, int):
        return int.__int__(x)
    if isinstance(x, float):
        return float.__float__(x)
    if isinstance(x, str):
        return str.__str__(x)
    d = depth + 1
    if isinstance(x, list):
        return [_enc(v, d) for v in list.__iter__(x)]
    if isinstance(x, tuple):
        return {"$": "tuple", "v": [_enc(v, d) for v in tuple.__iter__(x)]}
    if isinstance(x, dict):
        return {"$": "dict", "v": [[_enc(k, d), _enc(v, d)] for k, v in dict.items(x)]}
    if isinstance(x, (set, frozenset)):
        tag = "frozenset" if isinstance(x, frozenset) else "set"
        return {"$": tag, "v": [_enc(v, d) for v in frozenset.__iter__(frozenset(x))]}
    if isinstance(x, bytes):
        return {"$": "bytes", "v": bytes.hex(x)}
    if isinstance(x, complex):
        return {"$": "complex", "v": [x.real, x.imag]}
    raise TypeError(f"a {type(x).__name__} cannot cross the sandbox boundary (plain data only)")


def _dec(x, depth=0):
    """Tagged JSON data (possibly hostile) as exact built-in values."""
    if depth > _DEPTH_MAX:
        raise ValueError("value nested too deeply")
    t = type(x)
    if x is None or t is bool or t is int or t is float or t is str:
        return x
    d = depth + 1
    if t is list:
        return [_dec(v, d) for v in x]
    if t is dict and set(x) == {"$", "v"}:
        tag, v = x["$"], x["v"]
        if tag == "tuple" and type(v) is list:
            return tuple(_dec(i, d) for i in v)
        if tag == "dict" and type(v) is list and all(type(p) is list and len(p) == 2 for p in v):
            return {_dec(k, d): _dec(i, d) for k, i in v}
        if tag in ("set", "frozenset") and type(v) is list:
            return (set if tag == "set" else frozenset)(_dec(i, d) for i in v)
        if tag == "bytes" and type(v) is str:
            return bytes.fromhex(v)
        if tag == "complex" and type(v) is list and len(v) == 2 and all(type(i) in (int, float) for i in v):
            return complex(v[0], v[1])
    raise ValueError(f"malformed value from the candidate: {str(x)[:80]}")


def _send(fd, obj, deadline=None):
    data = json.dumps(obj, separators=(",", ":")).encode()
    data = len(data).to_bytes(8, "big") + data
    while data:
        if deadline is not None:
            _wait(fd, deadline, write=True)
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            pass


def _read_exact(fd, n, deadline):
    chunks = []
    while n:
        if deadline is not None:
            _wait(fd, deadline)
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(fd, deadline=None):
    """One message, or None at end of file."""
    head = _read_exact(fd, 8, deadline)
    if head is None:
        return None
    n = int.from_bytes(head, "big")
    if n > _FRAME_MAX:
        raise ValueError(f"message of {n} bytes from the candidate exceeds {_FRAME_MAX}")
    data = _read_exact(fd, n, deadline)
    if data is None:
        return None
    return json.loads(data)


def _wait(fd, deadline, write=False):
    import time
    left = deadline - time.monotonic()
    r, w, _ = select.select([] if write else [fd], [fd] if write else [], [], max(left, 0))
    if not (r or w):
        raise _Timeout()


def _same(a, b):
    """Equal and of exactly the same types, all the way down (True is not 1, 1.0 is not 1)."""
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b
