"""The README's Python tour runs as written, offline, against the installed package."""

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text):
    """The ```python fenced blocks of ``text``, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def test_readme_has_a_tour():
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 3
    assert any("load_sample()" in block for block in blocks)


def test_readme_tour_runs_offline_as_written(tmp_path):
    code = "\n".join(python_blocks(README.read_text(encoding="utf-8")))
    # Offline: any download would go through a proxy where nothing listens.
    env = {**os.environ, "CNNEXT_DATA": str(tmp_path / "data"), "http_proxy": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "no_proxy": "", "MPLBACKEND": "Agg"}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "PYTHONPATH"):
        env.pop(name, None)
    # -P: the child imports the installed package whatever directory pytest runs in.
    result = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "simd:" in result.stdout  # show_config printed
    assert re.search(r"^\[0\.\d+, 0\.\d+, 0\.\d+\]$", result.stdout, re.MULTILINE), result.stdout
    assert "total parameters: 13,610" in result.stdout
    assert (tmp_path / "m.npz").is_file()
    assert not (tmp_path / "data").exists()  # nothing was downloaded or cached
