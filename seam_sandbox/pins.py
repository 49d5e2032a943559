"""A lock's PIN constraints: the custom PINs it refuses, and the length a shared PIN can have.

A scenario device may take only some lengths (`supported_code_lengths`) and may hold PINs set
outside Seam (`taken_pins`), so a PIN shared across locks can be refused on one of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from seam_sandbox.errors import SeamError, code_constraints_violated, duplicate_access_code
from seam_sandbox.scenario import DeviceSpec

_ANY_LENGTH = frozenset(range(4, 13))


def lengths(spec: DeviceSpec) -> frozenset[int]:
    """The PIN lengths the lock takes."""
    if spec.supported_code_lengths is None:
        return _ANY_LENGTH
    return frozenset(spec.supported_code_lengths)


def refusal(spec: DeviceSpec, pin: str, live_pins: Iterable[str]) -> SeamError | None:
    """Why the lock refuses `pin` (400 constraints, 409 already on the lock), or None."""
    if len(pin) not in lengths(spec):
        return code_constraints_violated(spec.id, sorted(lengths(spec)))
    if pin in spec.taken_pins or pin in set(live_pins):
        return duplicate_access_code(spec.id)
    return None


def shared_length(specs: Sequence[DeviceSpec], preferred: int | None) -> int | None:
    """A length every lock takes: `preferred` if it can, else the first lock's own, else the
    shortest common one (Seam: "reverts to using the shortest supported code length")."""
    common = frozenset.intersection(*(lengths(s) for s in specs)) if specs else frozenset()
    if not common:
        return None
    for candidate in (preferred, specs[0].code_length):
        if candidate in common:
            return candidate
    return min(common)
