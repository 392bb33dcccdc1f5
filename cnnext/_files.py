"""Opening and reading files whose size cannot be trusted.

The size a file system reports is a claim, not a bound: ``/dev/zero`` and
``/dev/urandom`` report 0 bytes and never end, files under ``/proc`` report 0
and hold more, a FIFO blocks whoever opens it until a writer comes, and a file
can grow while it is read.  So the readers of data files and checkpoints

* open without blocking and refuse anything but a regular file (a directory
  is ``IsADirectoryError``; a device, FIFO or socket the caller's own error,
  before anything is read from it);
* count the bytes they actually get, in chunks, and stop one byte past their
  limit, so nothing is allocated for a limit that is never reached
  (``read_capped`` for whole files, ``gunzip_capped`` for gzip streams);
* or, for archives read in place (checkpoints), see the file through
  ``BoundedFile``: its length is fixed when it is opened, and reads past it
  return nothing, whatever the file does afterwards.
"""

import errno
import gzip
import io
import os
import stat
import zlib

CHUNK_BYTES = 1 << 20

_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode):
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _refuse_special(path, mode, error):
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", os.fsdecode(path))
    if not stat.S_ISREG(mode):
        raise error(f"{os.fsdecode(path)}: {_kind(mode)}, not a regular file; only regular "
                    "files are read, since nothing bounds what a device or pipe delivers")


def open_regular(path, error):
    """open_regular(path, error)

    ``path`` opened for binary reading, as a raw (unbuffered) file object,
    once it is known to be a regular file.

    The path is checked before it is opened (opening some devices has side
    effects) and the open file again (the path may have been replaced in
    between).  Opening never blocks: a FIFO without a writer is refused, not
    waited for.

    Raises
    ------
    error
        ``path`` is a device, FIFO or socket (``error`` is the caller's
        exception class, called with a message naming the path).
    IsADirectoryError, FileNotFoundError, PermissionError, OSError
        As ``open`` raises them.
    """
    _refuse_special(path, os.stat(path).st_mode, error)
    flags = (os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_NOCTTY", 0))
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags | nonblocking)
    try:
        _refuse_special(path, os.fstat(fd).st_mode, error)
        if nonblocking:
            os.set_blocking(fd, True)
        return open(fd, "rb", buffering=0, closefd=True)
    except BaseException:
        os.close(fd)
        raise


def read_capped(file, limit, name, error, what="holds"):
    """read_capped(file, limit, name, error, what="holds")

    Everything ``file`` holds from its position, refusing more than ``limit``
    bytes: it reads in chunks and stops at ``limit + 1`` bytes, so neither a
    file that never ends nor a huge ``limit`` allocates more than what was
    actually read.

    Raises
    ------
    error
        More than ``limit`` bytes: "<name>: <what> more than <limit> bytes".
    """
    chunks, total = [], 0
    while True:
        chunk = file.read(min(CHUNK_BYTES, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise error(f"{name}: {what} more than {limit} bytes, over the limit")


def read_regular_capped(path, limit, error):
    """The bytes of the regular file ``path``, at most ``limit`` of them (see ``read_capped``)."""
    with open_regular(path, error) as file:
        return read_capped(file, limit, os.fsdecode(path), error)


def gunzip_capped(data, limit, name, error):
    """The gzip data ``data`` decompressed, refusing more than ``limit`` bytes.

    Decompresses a chunk at a time up to ``limit + 1`` bytes, so a gzip bomb
    is refused without being inflated and a huge ``limit`` allocates nothing
    in advance.  Reading to the end checks the CRC and length of every member.

    Raises
    ------
    error
        Over the limit, or corrupt or truncated gzip data.
    """
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            return read_capped(stream, limit, name, error, "decompresses to")
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, error):
            raise
        raise error(f"{name}: corrupt or truncated gzip data ({exc})") from None


class BoundedFile(io.RawIOBase):
    """BoundedFile(raw)

    A read-only, seekable view of the regular file ``raw`` whose length is
    fixed at its length when the view is made (measured by seeking to its
    end, not taken from ``st_size``): reads past it return nothing, so a
    reader that seeks and reads "to the end" reads at most that many bytes
    even if the file grows meanwhile.
    """

    def __init__(self, raw):
        super().__init__()
        self._raw = raw
        self.length = raw.seek(0, io.SEEK_END)
        raw.seek(0)
        self._position = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._position

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.length}[whence]
        position = base + offset
        if position < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._position = position
        return position

    def readinto(self, buffer):
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(0, self.length - self._position))
        if wanted == 0:
            return 0
        self._raw.seek(self._position)
        count = self._raw.readinto(view[:wanted]) or 0
        self._position += count
        return count

    def close(self):
        try:
            self._raw.close()
        finally:
            super().close()
