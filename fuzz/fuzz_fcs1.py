"""atheris target: FLIM LABS FCS1 correlation curves (two JSON blocks in a binary
container)."""

from _harness import fuzz_reader

if __name__ == "__main__":
    fuzz_reader("fcs1")
