"""atheris target: FLIM LABS spectroscopy photon events (STT1 and legacy raw output)."""

from _harness import fuzz_reader

if __name__ == "__main__":
    fuzz_reader("spectro")
