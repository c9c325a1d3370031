"""atheris target: FLIM LABS ITT1 intensity time tagger events."""

from _harness import fuzz_reader

if __name__ == "__main__":
    fuzz_reader("itt1")
