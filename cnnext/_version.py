"""The version of cnnext: the single source read by setup (pyproject.toml) and the package."""

__version__ = "0.1.0"
