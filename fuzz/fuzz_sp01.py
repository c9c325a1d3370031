"""atheris target: FLIM LABS SP01 decay curves (tidy and wide)."""

from _harness import fuzz_reader

if __name__ == "__main__":
    fuzz_reader("sp01")
