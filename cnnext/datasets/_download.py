"""Verified downloads: mirrors in order, streamed to a temporary file, SHA-256, atomic rename.

A file reaches its final name only after its checksum matched, by
``os.replace`` of a temporary file in the same directory, so a reader never
sees a partial or unverified file, whatever happens mid-transfer (a dropped
connection, a stall, a wrong file on a mirror, Ctrl-C, a killed process leaves
at worst a ``.*.part`` file that nothing reads, deleted by a later download of
the same file once it is an hour old).
"""

import contextlib
import glob
import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .._progress import ProgressBar
from .._version import __version__
from ._idx import DEFAULT_MAX_BYTES, DataFileError, decompress_capped

# Seconds a connection may stay silent (connecting, or between two reads).
DEFAULT_TIMEOUT = 15.0
CHUNK_BYTES = 1 << 16
# A live download gives up after `timeout` seconds without data, so a .part
# file untouched this long was left by a process that was killed.
STALE_PART_SECONDS = 3600


class DownloadError(OSError):
    """No mirror delivered the file with the expected checksum."""


def download(urls, dest, sha256, *, digest_of="file", timeout=DEFAULT_TIMEOUT,
             max_bytes=DEFAULT_MAX_BYTES, progress=True):
    """download(urls, dest, sha256, *, digest_of="file", timeout=15, max_bytes=2**28, progress=True)

    Fetch a file from the first mirror that delivers it intact.

    Parameters
    ----------
    urls : sequence of str
        Full URLs of the same file, tried in order.
    dest : str or os.PathLike
        Final path; its directory is created if needed and holds the
        temporary file.
    sha256 : str
        Expected hex digest.
    digest_of : {"file", "content"}
        Whether ``sha256`` is of the bytes as served or of their gunzipped
        content (for files that were recompressed by some distributors).
    timeout : float
        Seconds without progress before a mirror is given up.
    max_bytes : int
        Largest accepted size (served and decompressed).
    progress : bool
        Show a progress bar on stderr (drawn in place on a terminal, one line
        per file otherwise).

    Returns
    -------
    Path
        ``dest``, now holding the verified file.

    Raises
    ------
    DownloadError
        Every mirror failed; the message gives each one's reason.
    """
    if digest_of not in ("file", "content"):
        raise ValueError(f"download: digest_of must be 'file' or 'content', got {digest_of!r}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(dest)
    failures = []
    for url in urls:
        try:
            _fetch_verified(url, dest, sha256, digest_of, timeout, max_bytes, progress)
        except (OSError, http.client.HTTPException, DataFileError) as exc:
            failures.append(f"{url}: {_describe(exc, timeout)}")
        else:
            return dest
    raise DownloadError(f"could not download {dest.name} ({'; '.join(failures)})")


def _remove_stale_parts(dest):
    cutoff = time.time() - STALE_PART_SECONDS
    for part in dest.parent.glob(f".{glob.escape(dest.name)}.*.part"):
        # Another process may delete it at the same moment.
        with contextlib.suppress(OSError):
            if part.stat().st_mtime < cutoff:
                part.unlink()


def _fetch_verified(url, dest, sha256, digest_of, timeout, max_bytes, progress):
    request = urllib.request.Request(url, headers={"User-Agent": f"cnnext/{__version__}"})
    fd, part = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with open(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            digest = _stream(response, out, dest.name, max_bytes, progress)
            out.flush()
            os.fsync(out.fileno())
        if digest_of == "content":
            content = decompress_capped(Path(part).read_bytes(), url, max_bytes)
            digest = hashlib.sha256(content).hexdigest()
        if digest != sha256:
            raise DataFileError(f"SHA-256 {digest}, expected {sha256}")
        os.replace(part, dest)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise


def _stream(response, out, name, max_bytes, progress):
    """Copy the response body into ``out``; return the SHA-256 of what was received."""
    length = response.headers.get("Content-Length", "")
    total = int(length) if length.isdigit() else None
    if total is not None and total > max_bytes:
        raise DataFileError(f"server announces {total} bytes, over the limit of {max_bytes}")
    digest = hashlib.sha256()
    received = 0
    bar = ProgressBar(total, desc=name, unit="B") if progress else None
    try:
        # read1: whatever has arrived, so the file and the bar follow the transfer.
        while chunk := response.read1(CHUNK_BYTES):
            received += len(chunk)
            if received > max_bytes:
                raise DataFileError(f"more than {max_bytes} bytes, over the limit")
            digest.update(chunk)
            out.write(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    # http.client returns b"" rather than raising when a connection closes early.
    if total is not None and received != total:
        raise http.client.IncompleteRead(b"", total - received)
    return digest.hexdigest()


def _describe(exc, timeout):
    """One short phrase for why a mirror failed."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, TimeoutError):
        return f"timed out (no data for {timeout:g} s)"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed with {exc.expected} bytes still to come"
    return str(exc) or type(exc).__name__
