"""The strict IDX parser: valid files round-trip; malformed ones raise DataFileError."""

import gzip
import re

import numpy as np
import pytest
from data_testing import gzipped, idx_bytes
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cnnext.datasets import DataFileError, read_idx
from cnnext.datasets._idx import parse_idx

IDX_DTYPES = ["u1", "i1", ">i2", ">i4", ">f4", ">f8"]


@given(
    array=hnp.arrays(
        dtype=st.sampled_from(IDX_DTYPES),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6),
    ),
    compress=st.booleans(),
)
def test_valid_files_round_trip(array, compress):
    data = idx_bytes(array)
    result = parse_idx(gzipped(data) if compress else data)
    assert result.shape == array.shape
    assert result.dtype == array.dtype.newbyteorder("=")
    assert result.dtype.isnative and result.flags.c_contiguous and result.flags.writeable
    np.testing.assert_array_equal(result, array)


def test_read_idx_reads_raw_and_gzip_files(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    (tmp_path / "raw").write_bytes(idx_bytes(images))
    (tmp_path / "packed.gz").write_bytes(gzipped(idx_bytes(images)))
    for name in ("raw", "packed.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), images)


def header(type_byte, *dims):
    return bytes([0, 0, type_byte, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


VALID = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))

MALFORMED = {
    "empty": (b"", "too short for an IDX header"),
    "short magic": (b"\x00\x00\x08", "too short for an IDX header"),
    "nonzero magic": (b"\x01" + VALID[1:], "not an IDX file"),
    "foreign file": (b"PK\x03\x04" + VALID[4:], "not an IDX file"),
    "unknown type byte": (header(0x0A, 2) + b"\x00\x00", "not an IDX file"),
    "zero dimensions": (header(0x08), "declares 0 dimensions"),
    "truncated header": (header(0x08, 2, 3, 4)[:10], "truncated IDX header"),
    "truncated data": (VALID[:-1], "truncated"),
    "no data": (header(0x08, 2, 3, 4), "truncated"),
    "trailing bytes": (VALID + b"\x00", "trailing bytes"),
    "wrong dims": (header(0x08, 2, 3, 5) + VALID[16:], "declares shape (2, 3, 5)"),
    "dims too few": (header(0x08, 2, 3) + VALID[16:], "trailing bytes"),
    "item size": (header(0x0C, 2, 3, 4) + VALID[16:], "truncated"),
    "huge declared size": (header(0x0E, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), "over the limit"),
    "huge after a zero": (header(0x08, 0xFFFFFFFF, 0xFFFFFFFF) + b"\x00", "over the limit"),
    "huge beside a zero": (header(0x08, 0, 0xFFFFFFFF, 0xFFFFFFFF), "counting empty extents"),
    "truncated gzip": (gzipped(VALID)[:-9], "corrupt or truncated gzip"),
    "bad gzip crc": (gzipped(VALID)[:-8] + b"\x00\x00\x00\x00" + gzipped(VALID)[-4:],
                     "corrupt or truncated gzip"),
    "gzip header only": (b"\x1f\x8b", "corrupt or truncated gzip"),
    "gzip of garbage": (gzipped(b"\xff" * 100), "not an IDX file"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_files_raise_naming_the_file(tmp_path, case):
    data, message = MALFORMED[case]
    path = tmp_path / "case-file.gz"
    path.write_bytes(data)
    with pytest.raises(DataFileError, match=re.escape(message)) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_declared_size_over_the_cap_is_refused_before_allocating():
    # The data is all there: only the cap refuses it.
    with pytest.raises(DataFileError, match="over the limit of 1000 bytes"):
        parse_idx(header(0x08, 1001) + bytes(1001), max_bytes=1000)
    assert parse_idx(header(0x08, 1000) + bytes(1000), max_bytes=1000).shape == (1000,)


def test_gzip_bomb_is_refused_without_inflating_it():
    bomb = gzip.compress(header(0x08, 50_000_000) + bytes(50_000_000), compresslevel=9)
    assert len(bomb) < 100_000
    with pytest.raises(DataFileError, match="decompresses to more than 1000000 bytes"):
        parse_idx(bomb, "bomb.gz", max_bytes=1_000_000)


def test_file_over_the_cap_on_disk_is_not_read_past_it(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(header(0x08, 100) + bytes(100))
    with pytest.raises(DataFileError, match=f"{path}: holds more than 50 bytes, over the limit"):
        read_idx(path, max_bytes=50)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"max_bytes": "x"}, TypeError, "read_idx: max_bytes must be an int, got str"),
        ({"max_bytes": 1.5}, TypeError, "read_idx: max_bytes must be an int, got float"),
        ({"max_bytes": True}, TypeError, "read_idx: max_bytes must be an int, got bool"),
        ({"max_bytes": -1}, ValueError, "read_idx: max_bytes must be >= 0, got -1"),
        ({"path": None}, TypeError, "read_idx: path must be a path (str or os.PathLike), got "
                                    "NoneType"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, error, message):
    path = tmp_path / "ok"
    path.write_bytes(VALID)
    with pytest.raises(error, match=re.escape(message)):
        read_idx(**{"path": path, **kwargs})


def test_missing_file_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")


def mutations():
    """A valid gzip or raw file with some bytes overwritten, cut or appended."""
    base = st.sampled_from([VALID, gzipped(VALID), idx_bytes(np.ones((3, 2), ">f4"))])
    edits = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4)

    def mutate(data, edits, cut, tail):
        data = bytearray(data)
        for position, value in edits:
            data[position % len(data)] = value
        return bytes(data[: len(data) - cut]) + tail

    return st.builds(mutate, base, edits, st.integers(0, 3), st.binary(max_size=3))


@given(data=st.one_of(st.binary(max_size=64), mutations()))
def test_fuzzed_bytes_parse_or_raise_data_file_error(data):
    try:
        result = parse_idx(data, max_bytes=1 << 16)
    except DataFileError:
        return
    assert isinstance(result, np.ndarray) and result.nbytes <= 1 << 16
