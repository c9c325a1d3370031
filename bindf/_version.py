from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version("bindf")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
