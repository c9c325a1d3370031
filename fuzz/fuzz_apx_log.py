"""atheris target: legacy AstroPix text logs (``.log``)."""

from _harness import fuzz_reader

if __name__ == "__main__":
    fuzz_reader("apx_log")
