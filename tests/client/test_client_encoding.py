"""The wire encoding of inputs and results: tagged circuits, arrays and complex numbers in JSON."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import numpy as np
import pytest
from qiskit.circuit import Parameter, QuantumCircuit
from qruntime import ReferenceCircuits, encoding


def test_plain_json_is_plain() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": []}}
    text = encoding.dumps(value)
    assert json.loads(text) == value
    assert encoding.loads(text) == value


def test_circuit_round_trip_and_shape() -> None:
    bell = ReferenceCircuits.bell()
    text = encoding.dumps({"circuits": bell})
    tagged = json.loads(text)["circuits"]
    assert tagged.keys() == {"__type__", "__value__"} and tagged["__type__"] == "QuantumCircuit"
    assert encoding.is_encoded_circuit(tagged)
    base64.b64decode(tagged["__value__"], validate=True)
    decoded = encoding.loads(text)["circuits"]
    assert decoded == bell
    assert decoded.name == "bell" and [r.name for r in decoded.cregs] == ["c"]


def test_list_of_circuits_and_parameters_survive() -> None:
    theta = Parameter("θ")
    rotated = QuantumCircuit(1, 1)
    rotated.rx(theta, 0)
    rotated.measure(0, 0)
    circuits = [ReferenceCircuits.bell(), ReferenceCircuits.ghz(4), rotated]
    decoded = encoding.loads(encoding.dumps(circuits))
    assert decoded == circuits
    assert [p.name for p in decoded[2].parameters] == ["θ"]


def test_ndarray_round_trip_keeps_dtype_and_shape() -> None:
    for array in (np.arange(6, dtype=np.int16).reshape(2, 3), np.array([[1 + 2j, 3j]]), np.zeros((0,))):
        decoded = encoding.loads(encoding.dumps({"a": array}))["a"]
        assert isinstance(decoded, np.ndarray)
        assert decoded.dtype == array.dtype and decoded.shape == array.shape
        assert np.array_equal(decoded, array)


def test_object_arrays_are_refused() -> None:
    with pytest.raises(TypeError):
        encoding.dumps(np.array([{"a": 1}], dtype=object))


def test_complex_numbers() -> None:
    text = encoding.dumps([1 + 2j, np.complex128(-0.5j)])
    assert json.loads(text) == [
        {"__type__": "complex", "__value__": [1.0, 2.0]},
        {"__type__": "complex", "__value__": [-0.0, -0.5]},
    ]
    assert encoding.loads(text) == [1 + 2j, -0.5j]


def test_numpy_scalars_become_plain_numbers_and_tuples_lists() -> None:
    text = encoding.dumps({"i": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True), "t": (1, (2, 3))})
    assert json.loads(text) == {"i": 3, "f": 0.5, "b": True, "t": [1, [2, 3]]}
    assert "__type__" not in text


def test_nested_mix_round_trip() -> None:
    value = {
        "runs": [{"circuit": ReferenceCircuits.bell(), "weights": np.array([0.25, 0.75]), "phase": 1j}],
        "shots": 100,
    }
    decoded = encoding.loads(encoding.dumps(value))
    assert decoded["shots"] == 100
    run = decoded["runs"][0]
    assert run["circuit"] == value["runs"][0]["circuit"]
    assert np.array_equal(run["weights"], value["runs"][0]["weights"])
    assert run["phase"] == 1j


def test_sets_and_unknown_types_are_refused() -> None:
    with pytest.raises(TypeError, match="set"):
        encoding.dumps({"s": {1, 2}})
    with pytest.raises(TypeError, match="object"):
        encoding.dumps(object())


@pytest.mark.parametrize(
    "text",
    [
        '{"__type__": "Mystery", "__value__": 1}',
        '{"__type__": "QuantumCircuit", "__value__": "not base64!"}',
        '{"__type__": "QuantumCircuit", "__value__": "aGVsbG8="}',
        '{"__type__": "ndarray", "__value__": "aGVsbG8="}',
        '{"__type__": "complex", "__value__": [1]}',
    ],
)
def test_malformed_tagged_values_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        encoding.loads(text)


def test_objects_with_extra_keys_are_left_alone() -> None:
    value = {"__type__": "complex", "__value__": [1, 2], "note": "x"}
    assert encoding.loads(encoding.dumps(value)) == value


def test_is_encoded_circuit_is_strict() -> None:
    good = json.loads(encoding.dumps(ReferenceCircuits.bell()))
    assert encoding.is_encoded_circuit(good)
    assert not encoding.is_encoded_circuit({**good, "extra": 1})
    assert not encoding.is_encoded_circuit({"__type__": "ndarray", "__value__": good["__value__"]})
    assert not encoding.is_encoded_circuit({"__type__": "QuantumCircuit", "__value__": 5})
    assert not encoding.is_encoded_circuit([good])


def test_qpy_blob_of_several_circuits() -> None:
    circuits = [ReferenceCircuits.bell(), ReferenceCircuits.ghz(3)]
    blob = encoding.dump_circuits_qpy(circuits)
    assert encoding.load_circuits_qpy(blob) == circuits
    assert encoding.load_circuits_qpy(encoding.dump_circuits_qpy(circuits[0])) == circuits[:1]
    with pytest.raises(ValueError):
        encoding.load_circuits_qpy(b"definitely not qpy")
    with pytest.raises(TypeError):
        encoding.dump_circuits_qpy(["bell"])  # type: ignore[list-item]


def test_reference_circuits() -> None:
    bell = ReferenceCircuits.bell()
    assert (bell.num_qubits, bell.num_clbits, bell.name) == (2, 2, "bell")
    assert [i.operation.name for i in bell.data] == ["h", "cx", "measure", "measure"]
    ghz = ReferenceCircuits.ghz(5)
    assert ghz.count_ops() == {"h": 1, "cx": 4, "measure": 5}
    with pytest.raises(ValueError):
        ReferenceCircuits.ghz(1)


def test_importing_the_client_does_not_import_qiskit() -> None:
    code = "import sys, qruntime; qruntime.encoding.dumps({'a': 1}); assert 'qiskit' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
