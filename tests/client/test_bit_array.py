"""CountedBitArray counts as Qiskit's BitArray does: the same dictionaries, keys in the same order, for
every width, shape and loc, with the padding bits of the first byte ignored as Qiskit ignores them."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit.primitives.containers import BitArray
from qruntime._bit_array import CountedBitArray


def arrays(num_bits: int, shape: tuple[int, ...], shots: int, outcomes: int, seed: int):
    """The same random packed bits as Qiskit's BitArray and as ours; a few distinct outcomes repeated, and
    the first byte's padding bits set at random (they are not part of any outcome)."""
    rng = np.random.default_rng(seed)
    width = max(1, (num_bits + 7) // 8)
    palette = rng.integers(0, 256, size=(outcomes, width), dtype=np.uint8)
    packed = palette[rng.integers(0, outcomes, size=(*shape, shots))]
    return BitArray(packed, num_bits), CountedBitArray(packed.copy(), num_bits)


@pytest.mark.parametrize("num_bits", [1, 2, 7, 8, 9, 16, 63, 64, 65, 100])
@pytest.mark.parametrize("shape", [(), (3,), (2, 3)])
def test_counts_match_qiskits_keys_values_and_order(num_bits, shape):
    theirs, ours = arrays(num_bits, shape, shots=200, outcomes=7, seed=num_bits * 10 + len(shape))
    locs = [None] + [index for index in np.ndindex(*shape)] + ([0] if shape else [])
    for loc in locs:
        assert list(ours.get_counts(loc).items()) == list(theirs.get_counts(loc).items()), loc
        assert list(ours.get_int_counts(loc).items()) == list(theirs.get_int_counts(loc).items()), loc


def test_a_bell_pubs_counts_and_all_distinct_shots():
    bell = np.array([[0], [3], [3], [0], [3]], dtype=np.uint8)
    assert list(CountedBitArray(bell, 2).get_counts().items()) == [("00", 2), ("11", 3)]
    theirs, ours = arrays(40, (), shots=5000, outcomes=5000, seed=3)  # every shot its own outcome, mostly
    assert ours.get_counts() == theirs.get_counts()


def test_no_shots_count_nothing():
    empty = np.zeros((0, 1), dtype=np.uint8)
    assert CountedBitArray(empty, 3).get_counts() == BitArray(empty, 3).get_counts() == {}
    assert CountedBitArray(empty, 3).get_int_counts() == {}


def test_it_is_a_bit_array_and_leaves_the_data_it_counts_unchanged():
    theirs, ours = arrays(5, (2,), shots=50, outcomes=4, seed=9)
    before = ours.array.copy()
    ours.get_counts()
    assert isinstance(ours, BitArray)
    assert np.array_equal(ours.array, before)
    assert ours.slice_bits([0, 1]).get_counts() == theirs.slice_bits([0, 1]).get_counts()
