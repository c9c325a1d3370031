"""atheris target: FLIM LABS IT02 intensity tracing (detection, dense, sparse, fill_gaps)."""

from _harness import fuzz_reader

if __name__ == "__main__":
    fuzz_reader("it02")
