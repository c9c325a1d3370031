"""atheris target: AstroPix ``.apx`` reader (hits and readout tables, small reads)."""

from _harness import fuzz_reader

if __name__ == "__main__":
    fuzz_reader("apx")
