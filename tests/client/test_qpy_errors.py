"""A damaged QPY file's error is one plain line a person can read: what qiskit's Rust reader found,
without its drawn backtrace, terminal colour codes or source locations."""

from __future__ import annotations

import pytest
from qruntime import ReferenceCircuits
from qruntime.encoding import dump_circuits_qpy, load_circuits_qpy


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_truncated_circuit_error_is_plain_text(keep):
    data = dump_circuits_qpy([ReferenceCircuits.bell()])
    with pytest.raises(ValueError) as caught:
        load_circuits_qpy(data[: int(len(data) * keep)])
    message = str(caught.value)
    assert message.startswith("not a valid QPY file: binary parsing error; ")
    assert "While parsing field" in message  # what the reader was reading when the data ran out
    for drawing in ("\x1b", "\\x1b", "[1m", "Backtrace", "━", "crates/", ".rs:", "\n", "\\n"):
        assert drawing not in message, drawing
