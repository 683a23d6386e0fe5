"""The trainers compute what they computed when the pin was taken (tests/pin_metrics.py).

Every pinned metric must still be there with the same value; new metrics may appear.
Integers and strings match exactly, floats to 1e-6 relative: the runs go on one fixed
float path, so a change that does not mean to move them leaves them where they were,
and one that does shows here first.
"""

import math

import pytest

from pin_metrics import PIN, run_pinned


def _diff(pinned, now, where: str) -> list[str]:
    if isinstance(pinned, dict):
        if not isinstance(now, dict):
            return [f"{where}: {now!r} is not a mapping"]
        return [d for k, v in pinned.items()
                for d in ([f"{where}.{k}: missing"] if k not in now else _diff(v, now[k], f"{where}.{k}"))]
    if isinstance(pinned, list):
        if not isinstance(now, list) or len(now) != len(pinned):
            return [f"{where}: {len(pinned)} rows pinned, {len(now) if isinstance(now, list) else now!r} now"]
        return [d for i, (a, b) in enumerate(zip(pinned, now)) for d in _diff(a, b, f"{where}[{i}]")]
    if isinstance(pinned, float) or isinstance(now, float):
        ok = isinstance(now, (int, float)) and math.isclose(pinned, now, rel_tol=1e-6, abs_tol=1e-9)
        return [] if ok else [f"{where}: pinned {pinned!r}, now {now!r}"]
    return [] if pinned == now else [f"{where}: pinned {pinned!r}, now {now!r}"]


@pytest.mark.skipif(not PIN.exists(), reason="no pin taken (python tests/pin_metrics.py --write)")
def test_seeded_steps_compute_what_was_pinned():
    import json

    diffs = _diff(json.loads(PIN.read_text()), run_pinned(), "metrics")
    assert not diffs, "\n".join(diffs[:30])
