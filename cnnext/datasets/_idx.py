"""A strict reader of IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a 4-byte magic number (two zero bytes, a type byte, the number
of dimensions), one big-endian uint32 per dimension, then the array in C order
and big-endian byte order.  Files are often gzip-compressed.

Nothing here trusts the file: the header must be well formed, the payload must
hold exactly the bytes the header declares, and sizes are capped before any
memory is allocated, so a corrupt, truncated, foreign or hostile file (a gzip
bomb, a header declaring terabytes) raises ``DataFileError`` naming the file.
"""

import math
import os

import numpy as np

from .. import _files
from .._validation import to_int

# Type byte -> big-endian NumPy dtype, as defined by the IDX format.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
# The largest file of either dataset decompresses to 47 MB.
DEFAULT_MAX_BYTES = 1 << 28
# NumPy's limit on the number of dimensions (32 before NumPy 2).
MAX_NDIM = 64 if int(np.__version__.split(".")[0]) >= 2 else 32


class DataFileError(ValueError):
    """A data file is corrupt, truncated, of a foreign format or fails its checksum."""


def check_max_bytes(func, max_bytes):
    max_bytes = to_int(func, "max_bytes", max_bytes)
    if max_bytes < 0:
        raise ValueError(f"{func}: max_bytes must be >= 0, got {max_bytes}")
    return max_bytes


def read_file_capped(path, max_bytes):
    """The bytes of the regular file ``path``, refusing more than ``max_bytes``.

    The bound is on the bytes actually read (see ``cnnext._files``): devices,
    FIFOs and sockets are refused unread, and a file reporting a small size
    that holds more (``/proc``) stops being read one byte past the limit.
    """
    return _files.read_regular_capped(path, max_bytes, DataFileError)


def decompress_capped(data, name, max_bytes):
    """``data`` gunzipped when it starts with the gzip magic, else unchanged.

    Decompresses at most ``max_bytes + 1`` bytes, a chunk at a time, so a
    gzip bomb is refused without being inflated and a huge ``max_bytes``
    allocates nothing up front.  Reading to the end checks the CRC and length
    in the gzip trailer.
    """
    if not data.startswith(GZIP_MAGIC):
        return data
    return _files.gunzip_capped(data, max_bytes, name, DataFileError)


def parse_idx(data, name="<bytes>", max_bytes=DEFAULT_MAX_BYTES):
    """parse_idx(data, name="<bytes>", max_bytes=DEFAULT_MAX_BYTES)

    Parse the bytes of an IDX file, raw or gzip-compressed.

    Parameters
    ----------
    data : bytes
        The file's content.
    name : str
        How errors refer to the data (usually its path).
    max_bytes : int
        Largest accepted (decompressed) size.

    Returns
    -------
    ndarray
        Native byte order, C-contiguous, writeable, shape as declared.

    Raises
    ------
    DataFileError
        Bad magic number, unknown type byte, no dimensions, a payload that is
        not exactly the declared size, a size over ``max_bytes``, corrupt gzip.
    """
    max_bytes = check_max_bytes("parse_idx", max_bytes)
    content = decompress_capped(data, name, max_bytes)
    if len(content) < 4:
        raise DataFileError(f"{name}: {len(content)} bytes, too short for an IDX header")
    zero, type_byte, ndim = int.from_bytes(content[:2], "big"), content[2], content[3]
    if zero != 0 or type_byte not in IDX_DTYPES:
        raise DataFileError(
            f"{name}: not an IDX file (magic number {content[:4].hex()}; expected 0000 "
            f"then a type byte in {{{', '.join(f'{t:02x}' for t in IDX_DTYPES)}}} "
            "then the number of dimensions)"
        )
    if ndim == 0:
        raise DataFileError(f"{name}: IDX header declares 0 dimensions")
    if ndim > MAX_NDIM:
        raise DataFileError(f"{name}: IDX header declares {ndim} dimensions; NumPy arrays have "
                            f"at most {MAX_NDIM}")
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise DataFileError(
            f"{name}: truncated IDX header ({len(content)} bytes; {ndim} dimensions "
            f"need {header_size})"
        )
    shape = tuple(
        int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    dtype = IDX_DTYPES[type_byte]
    # Python integers: a hostile header cannot overflow the products.  The cap
    # counts an empty extent as 1: (0, 2**32-1, 2**32-1) holds no data, but
    # NumPy cannot even represent its shape.
    declared = dtype.itemsize * math.prod(shape)
    nominal = dtype.itemsize * math.prod(max(extent, 1) for extent in shape)
    if nominal > max_bytes:
        raise DataFileError(
            f"{name}: IDX header declares shape {shape} ({nominal} bytes counting empty "
            f"extents as 1), over the limit of {max_bytes} bytes"
            if declared != nominal else
            f"{name}: IDX header declares shape {shape} ({declared} bytes), over the "
            f"limit of {max_bytes} bytes"
        )
    payload = len(content) - header_size
    if payload != declared:
        problem = "truncated" if payload < declared else "trailing bytes"
        raise DataFileError(
            f"{name}: {problem}: IDX header declares shape {shape} of {dtype.str[1:]} "
            f"({declared} bytes of data) but the file holds {payload}"
        )
    array = np.frombuffer(content, dtype=dtype, count=declared // dtype.itemsize,
                          offset=header_size)
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: "str | os.PathLike[str]", max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """read_idx(path, max_bytes=DEFAULT_MAX_BYTES)

    Read an IDX file (raw or gzip-compressed) into a NumPy array.

    Parameters
    ----------
    path : str or os.PathLike
    max_bytes : int
        Largest accepted size, on disk and decompressed.

    Returns
    -------
    ndarray
        Native byte order, shape as declared in the header.

    Raises
    ------
    DataFileError
        The file is not a complete, well-formed IDX file (see ``parse_idx``).
    OSError
        The file cannot be read.
    TypeError, ValueError
        ``path`` is not a path, ``max_bytes`` not an integer >= 0.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"read_idx: path must be a path (str or os.PathLike), got {type(path).__name__}"
        )
    max_bytes = check_max_bytes("read_idx", max_bytes)
    return parse_idx(read_file_capped(path, max_bytes), str(path), max_bytes)
