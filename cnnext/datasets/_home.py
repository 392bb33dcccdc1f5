"""Where downloaded data is kept: the ``data_home`` argument, ``CNNEXT_DATA``, the user cache."""

import os
import sys
from pathlib import Path

ENV_VAR = "CNNEXT_DATA"


def default_cache_dir():
    """The platform's per-user cache directory for cnnext.

    ``$XDG_CACHE_HOME/cnnext`` (default ``~/.cache/cnnext``) on Linux and other
    Unixes, ``~/Library/Caches/cnnext`` on macOS, ``%LOCALAPPDATA%\\cnnext\\Cache``
    on Windows (the directories ``platformdirs`` would choose).
    """
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or _home() / "AppData" / "Local"
        return Path(base, "cnnext", "Cache")
    if sys.platform == "darwin":
        return _home() / "Library" / "Caches" / "cnnext"
    # The XDG spec says a relative path is invalid and must be ignored.
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else _home() / ".cache"
    return base / "cnnext"


def _home():
    """The user's home directory; FileNotFoundError saying what to set when there is none
    (HOME unset for a user the password database does not know, as in containers run
    under an arbitrary uid), where ``Path.home`` raises a bare RuntimeError."""
    try:
        return Path.home()
    except (RuntimeError, KeyError) as exc:
        raise FileNotFoundError(
            f"no home directory to keep datasets in ({exc}); set {ENV_VAR} (or "
            f"XDG_CACHE_HOME) to a directory, or pass data_home") from None


def get_data_home(data_home: "str | os.PathLike[str] | None" = None) -> Path:
    """get_data_home(data_home=None)

    The directory cnnext keeps datasets in (not created here).

    Parameters
    ----------
    data_home : str or os.PathLike, optional
        Used when given; otherwise the ``CNNEXT_DATA`` environment variable
        when set and not empty; otherwise ``default_cache_dir()``.

    Returns
    -------
    Path
    """
    check_data_home(data_home, "get_data_home")
    if data_home is None:
        data_home = os.environ.get(ENV_VAR) or default_cache_dir()
    return Path(data_home).expanduser()


def check_data_home(data_home, caller):
    if data_home is not None and not isinstance(data_home, (str, os.PathLike)):
        raise TypeError(
            f"{caller}: data_home must be a path (str or os.PathLike) or None, "
            f"got {type(data_home).__name__}"
        )


def data_home_origin():
    """Which setting chooses the default data home: "CNNEXT_DATA" or "default"."""
    return ENV_VAR if os.environ.get(ENV_VAR) else "default"
