"""The out= overlap test of cnnext._validation: ranges_overlap (the
compiled byte-range test) agrees with numpy.may_share_memory, and out_array
accepts exactly the buffers numpy.shares_memory says are disjoint."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnnext import _validation
from cnnext._kernels._memory import ranges_overlap

BASE = np.arange(64, dtype=np.float64).reshape(8, 8)


@st.composite
def views(draw):
    """A 2-D view of BASE: any start, stop and step (negative too) per axis,
    sometimes transposed, sometimes empty."""
    slices = []
    for _ in range(2):
        start = draw(st.integers(0, 7))
        stop = draw(st.integers(0, 8))
        step = draw(st.sampled_from([1, 2, 3, -1, -2]))
        slices.append(slice(start, stop, step))
    view = BASE[tuple(slices)]
    return view.T if draw(st.booleans()) else view


@given(views(), views())
def test_ranges_overlap_agrees_with_may_share_memory(a, b):
    assert ranges_overlap(a, (b,)) == np.may_share_memory(a, b)
    assert ranges_overlap(a, (None, np.zeros(3), b)) == np.may_share_memory(a, b)


def test_ranges_overlap_other_dtypes_and_non_arrays():
    raw = np.zeros(16, dtype=np.uint8)
    as_floats = raw.view(np.float64)
    assert ranges_overlap(as_floats, (raw[15:],))
    assert not ranges_overlap(as_floats[:1], (raw[8:],))
    assert not ranges_overlap(as_floats, ())
    # Anything that is not an ndarray is left to the exact test.
    assert ranges_overlap(as_floats, ([1.0],))


def test_out_array_takes_buffers_whose_bounds_overlap_but_not_their_memory():
    buffer = np.zeros(12)
    out, skipping = buffer[4:8], buffer[::8]  # skipping holds elements 0 and 8 only
    assert ranges_overlap(out, (skipping,))
    assert _validation.out_array("f", "out", out, (4,), out.dtype, (skipping,)) is out
    with pytest.raises(ValueError, match="f: out overlaps an input array"):
        _validation.out_array("f", "out", out, (4,), out.dtype, (skipping, buffer[7:]))
