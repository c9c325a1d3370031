"""atheris target: FLIM LABS IT01 intensity tracing (channel columns and raw slots)."""

from _harness import fuzz_reader

if __name__ == "__main__":
    fuzz_reader("it01")
