from importlib.metadata import PackageNotFoundError, version

try:
    #: The installed bindf's version (``"0+unknown"`` in a source tree never installed).
    __version__: str = version("bindf")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
