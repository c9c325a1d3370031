"""atheris target: FLIM LABS SPF1 phasors."""

from _harness import fuzz_reader

if __name__ == "__main__":
    fuzz_reader("spf1")
