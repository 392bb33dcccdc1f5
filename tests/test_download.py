"""Verified downloads from a local HTTP server: mirrors, checksums, stalls, cut transfers."""

import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from data_testing import LocalServer, Route, gzipped, idx_bytes, no_proxy, refused_url, sha256  # noqa: F401

from cnnext.datasets import DownloadError
from cnnext.datasets._download import download

CONTENT = idx_bytes(np.arange(10240, dtype=np.int32).reshape(10, 32, 32))
GOOD = gzipped(CONTENT)
GOOD_SHA = sha256(GOOD)


@pytest.fixture
def server():
    with LocalServer() as server:
        yield server


def fetch(urls, dest, digest=GOOD_SHA, **kwargs):
    kwargs.setdefault("timeout", 2)
    return download(urls, dest, digest, progress=False, **kwargs)


def files_in(directory):
    return sorted(p.name for p in directory.iterdir())


def test_good_file_lands_under_its_final_name_only(server, tmp_path):
    server.routes["/a/f.gz"] = Route(GOOD)
    dest = tmp_path / "cache" / "f.gz"
    assert fetch([server.url("/a/f.gz")], dest) == dest
    assert dest.read_bytes() == GOOD
    assert files_in(dest.parent) == ["f.gz"]


def test_wrong_checksum_on_first_mirror_then_good_on_second(server, tmp_path):
    server.routes["/one/f.gz"] = Route(GOOD[:100] + bytes([GOOD[100] ^ 1]) + GOOD[101:])
    server.routes["/two/f.gz"] = Route(GOOD)
    dest = tmp_path / "f.gz"
    fetch([server.url("/one/f.gz"), server.url("/two/f.gz")], dest)
    assert server.requests == ["/one/f.gz", "/two/f.gz"]
    assert dest.read_bytes() == GOOD
    assert files_in(tmp_path) == ["f.gz"]


def test_http_error_on_first_mirror_then_good_on_second(server, tmp_path):
    server.routes["/one/f.gz"] = Route(mode="status", status=404)
    server.routes["/two/f.gz"] = Route(GOOD)
    fetch([server.url("/one/f.gz"), server.url("/two/f.gz")], tmp_path / "f.gz")
    assert (tmp_path / "f.gz").read_bytes() == GOOD


def test_every_mirror_wrong_leaves_nothing_and_says_why(server, tmp_path):
    server.routes["/one/f.gz"] = Route(b"not it")
    server.routes["/two/f.gz"] = Route(mode="status", status=503)
    with pytest.raises(DownloadError) as info:
        fetch([server.url("/one/f.gz"), server.url("/two/f.gz")], tmp_path / "f.gz")
    message = str(info.value)
    assert f"SHA-256 {sha256(b'not it')}, expected {GOOD_SHA}" in message
    assert "HTTP 503" in message and "could not download f.gz" in message
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("mode", ["stall", "stall_body"])
def test_stalling_server_times_out_and_leaves_nothing(server, tmp_path, mode):
    server.routes["/f.gz"] = Route(GOOD, mode=mode)
    with pytest.raises(DownloadError, match=r"timed out \(no data for 0.3 s\)"):
        fetch([server.url("/f.gz")], tmp_path / "f.gz", timeout=0.3)
    assert files_in(tmp_path) == []


def test_stalling_first_mirror_then_good_second(server, tmp_path):
    server.routes["/slow/f.gz"] = Route(GOOD, mode="stall")
    server.routes["/fast/f.gz"] = Route(GOOD)
    fetch([server.url("/slow/f.gz"), server.url("/fast/f.gz")], tmp_path / "f.gz", timeout=0.3)
    assert (tmp_path / "f.gz").read_bytes() == GOOD


def test_connection_refused_fails_fast_with_reason(tmp_path):
    with pytest.raises(DownloadError, match="Connection refused"):
        fetch([refused_url("/f.gz")], tmp_path / "f.gz", timeout=30)
    assert files_in(tmp_path) == []


def test_interrupted_transfer_leaves_no_file(server, tmp_path):
    server.routes["/f.gz"] = Route(GOOD, mode="truncate")
    with pytest.raises(DownloadError, match=f"closed with {len(GOOD) - len(GOOD) // 2} bytes"):
        fetch([server.url("/f.gz")], tmp_path / "f.gz")
    assert files_in(tmp_path) == []


def test_interrupted_transfer_keeps_the_file_already_in_place(server, tmp_path):
    dest = tmp_path / "f.gz"
    dest.write_bytes(b"previous")
    server.routes["/f.gz"] = Route(GOOD, mode="truncate")
    with pytest.raises(DownloadError):
        fetch([server.url("/f.gz")], dest)
    assert files_in(tmp_path) == ["f.gz"] and dest.read_bytes() == b"previous"


def test_oversized_announcement_is_refused(server, tmp_path):
    server.routes["/f.gz"] = Route(GOOD)
    with pytest.raises(DownloadError, match=f"announces {len(GOOD)} bytes, over the limit of 100"):
        fetch([server.url("/f.gz")], tmp_path / "f.gz", max_bytes=100)
    assert files_in(tmp_path) == []


def test_content_digest_accepts_any_compression_of_the_same_data(server, tmp_path):
    content = CONTENT
    server.routes["/f.gz"] = Route(gzipped(content, level=1))
    dest = tmp_path / "f.gz"
    fetch([server.url("/f.gz")], dest, digest=sha256(content), digest_of="content")
    assert dest.read_bytes() == gzipped(content, level=1)
    with pytest.raises(DownloadError, match="SHA-256"):
        fetch([server.url("/f.gz")], tmp_path / "g.gz", digest=sha256(content + b"x"),
              digest_of="content")


def test_bad_digest_of_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="download: digest_of must be 'file' or 'content'"):
        download([], tmp_path / "f", GOOD_SHA, digest_of="gz")


def test_progress_bar_reports_the_file(server, tmp_path, monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    server.routes["/f.gz"] = Route(GOOD)
    download([server.url("/f.gz")], tmp_path / "f.gz", GOOD_SHA, timeout=2)
    line = err.getvalue()
    assert line.startswith("f.gz [########################]") and line.endswith("B/s\n")


def test_killed_download_leaves_no_file_under_the_final_name(server, tmp_path):
    server.routes["/f.gz"] = Route(GOOD, mode="stall_body")
    dest = tmp_path / "f.gz"
    code = (
        "import sys; from cnnext.datasets._download import download; "
        "download([sys.argv[1]], sys.argv[2], sys.argv[3], progress=False, timeout=60)"
    )
    child = subprocess.Popen(
        [sys.executable, "-P", "-c", code, server.url("/f.gz"), str(dest), GOOD_SHA])
    try:
        # Killed mid-transfer: half the file sent, the temporary file open.
        assert server.stalled.wait(60)
        assert len(list(tmp_path.glob(".f.gz.*.part"))) == 1 and child.poll() is None
    finally:
        child.kill()
        child.wait()
    assert not dest.exists()
    server.routes["/f.gz"] = Route(GOOD)
    fetch([server.url("/f.gz")], dest)
    assert dest.read_bytes() == GOOD


def test_parts_left_by_killed_downloads_are_deleted_once_stale(server, tmp_path):
    old, recent, other = (tmp_path / name for name in
                          (".f.gz.a1.part", ".f.gz.b2.part", ".g.gz.c3.part"))
    for part in (old, recent, other):
        part.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    for part in (old, other):
        os.utime(part, (two_hours_ago, two_hours_ago))
    server.routes["/f.gz"] = Route(GOOD)
    fetch([server.url("/f.gz")], tmp_path / "f.gz")
    assert files_in(tmp_path) == [".f.gz.b2.part", ".g.gz.c3.part", "f.gz"]
