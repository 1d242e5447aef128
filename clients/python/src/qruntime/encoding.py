"""The wire encoding of job inputs, results and interim results, shared by the client and the services.

Values are JSON text. What JSON cannot hold travels as a tagged object ``{"__type__": T, "__value__": V}``:

* ``T = "QuantumCircuit"``: V is the base64 of the circuit's QPY bytes (one circuit per object);
* ``T = "ndarray"``: V is the base64 of numpy's ``.npy`` bytes (saved with ``allow_pickle=False``);
* ``T = "complex"``: V is ``[real, imag]``.

numpy scalars become plain JSON numbers, tuples become lists, sets are refused with ``TypeError``.
An object whose only keys are ``__type__`` and ``__value__`` is always read as a tagged value.

Qiskit is imported only when a circuit is met, so services that never see one do not pay for it.
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from qiskit.circuit import QuantumCircuit

__all__ = [
    "TYPE_KEY",
    "VALUE_KEY",
    "dump_circuits_qpy",
    "dumps",
    "is_encoded_circuit",
    "load_circuits_qpy",
    "loads",
]

TYPE_KEY = "__type__"
"""The key naming the type of a tagged value."""
VALUE_KEY = "__value__"
"""The key holding the encoded value of a tagged value."""
_TAG_KEYS = frozenset((TYPE_KEY, VALUE_KEY))


def dumps(value: Any) -> str:
    """Encode ``value`` (JSON types, circuits, numpy arrays and scalars, complex numbers) as JSON text.

    Raises:
        TypeError: a value of a type the encoding does not support, such as a set.
    """
    return json.dumps(value, default=_encode_special, separators=(",", ":"))


def loads(text: str | bytes) -> Any:
    """Decode JSON text written by :func:`dumps`, restoring circuits, arrays and complex numbers.

    Raises:
        ValueError: the text is not JSON, or a tagged value is malformed or of an unknown type.
    """
    return json.loads(text, object_hook=_decode_tagged)


def is_encoded_circuit(value: Any) -> bool:
    """Whether ``value`` (a decoded JSON value) is a tagged QuantumCircuit object, without decoding it."""
    return (
        isinstance(value, dict)
        and value.keys() == _TAG_KEYS
        and value[TYPE_KEY] == "QuantumCircuit"
        and isinstance(value[VALUE_KEY], str)
    )


def dump_circuits_qpy(circuits: QuantumCircuit | Iterable[QuantumCircuit]) -> bytes:
    """Serialize one circuit or several into one QPY blob."""
    from qiskit import qpy
    from qiskit.circuit import QuantumCircuit

    if isinstance(circuits, QuantumCircuit):
        circuits = [circuits]
    circuits = list(circuits)
    for circuit in circuits:
        if not isinstance(circuit, QuantumCircuit):
            raise TypeError(f"expected QuantumCircuit objects, got {type(circuit).__name__}")
    buffer = io.BytesIO()
    qpy.dump(circuits, buffer)
    return buffer.getvalue()


_TERMINAL_CODES = re.compile(r"(\x1b|\\x1b)\[[0-9;?]*[A-Za-z]")  # raw, or written out as text
_FRAME = re.compile(r"^\d+:\s*")


def _plain(message: str) -> str:
    """A decoder's error as one plain line: qiskit's Rust QPY reader reports damage as a backtrace
    drawn with terminal colour codes and box characters; keep what it says, not how it draws it."""
    lines = []
    message = _TERMINAL_CODES.sub("", message).replace("\\n", "\n")  # its repr, quoted: newlines as text
    for line in message.strip().strip("'\"").splitlines():
        line = _FRAME.sub("", line.strip()).removeprefix("Error: ")
        if line and not line.startswith("at ") and "━" not in line:  # source locations, the frame's rules
            lines.append(line.rstrip(":"))
    text = "; ".join(lines)
    return "".join(c if c.isprintable() else " " for c in text)[:500]


def load_circuits_qpy(data: bytes) -> list[QuantumCircuit]:
    """Read every circuit of a QPY blob written by :func:`dump_circuits_qpy` (or ``qiskit.qpy.dump``).

    Raises:
        ValueError: the bytes are not a QPY file of circuits.
    """
    from qiskit import qpy
    from qiskit.circuit import QuantumCircuit

    try:
        programs = qpy.load(io.BytesIO(data))
    except ValueError:
        raise
    except Exception as exc:  # qpy raises QpyError, struct.error, EOFError... on damaged data
        raise ValueError(f"not a valid QPY file: {_plain(str(exc))}") from exc
    circuits = [p for p in programs if isinstance(p, QuantumCircuit)]
    if len(circuits) != len(programs):
        raise ValueError("the QPY file holds programs that are not QuantumCircuit objects")
    return circuits


def _tag(type_name: str, value: Any) -> dict[str, Any]:
    return {TYPE_KEY: type_name, VALUE_KEY: value}


def _encode_special(value: Any) -> Any:
    """json's ``default`` hook: called only for values json cannot write itself."""
    if isinstance(value, np.ndarray):
        buffer = io.BytesIO()
        try:
            np.save(buffer, value, allow_pickle=False)
        except ValueError as exc:  # object arrays would need pickle, which the encoding never uses
            raise TypeError(f"numpy arrays of dtype {value.dtype} cannot be encoded") from exc
        return _tag("ndarray", base64.b64encode(buffer.getvalue()).decode("ascii"))
    if isinstance(value, complex | np.complexfloating):
        value = complex(value)
        return _tag("complex", [value.real, value.imag])
    if isinstance(value, np.bool_ | np.integer | np.floating):
        return value.item()
    if isinstance(value, set | frozenset):
        raise TypeError("sets cannot be encoded: their order is not defined; pass a sorted list")
    if "qiskit" in sys.modules:  # without qiskit imported, nothing can be a circuit
        from qiskit.circuit import QuantumCircuit

        if isinstance(value, QuantumCircuit):
            return _tag("QuantumCircuit", base64.b64encode(dump_circuits_qpy(value)).decode("ascii"))
    raise TypeError(f"values of type {type(value).__name__} cannot be encoded")


def _decode_tagged(obj: dict[str, Any]) -> Any:
    """json's ``object_hook``: turns tagged objects back into values, leaves others alone."""
    if obj.keys() != _TAG_KEYS:
        return obj
    type_name, value = obj[TYPE_KEY], obj[VALUE_KEY]
    try:
        if type_name == "QuantumCircuit":
            circuits = load_circuits_qpy(base64.b64decode(value, validate=True))
            if len(circuits) != 1:
                raise ValueError(f"expected one circuit, found {len(circuits)}")
            return circuits[0]
        if type_name == "ndarray":
            return np.load(io.BytesIO(base64.b64decode(value, validate=True)), allow_pickle=False)
        if type_name == "complex":
            real, imag = value
            return complex(real, imag)
    except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
        raise ValueError(f"malformed tagged {type_name!r} value: {exc}") from exc
    raise ValueError(f"unknown tagged type {type_name!r}")
