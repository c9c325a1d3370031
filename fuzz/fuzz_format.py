"""atheris target for any registered format without a file of its own (plugins,
formats added later): ``BINDF_FUZZ_FORMAT=name python fuzz/fuzz_format.py [libFuzzer
flags]``. ``run_all.sh`` uses it for every target that has no ``fuzz_<name>.py``."""

import os

from _harness import fuzz_reader

if __name__ == "__main__":
    fuzz_reader(os.environ["BINDF_FUZZ_FORMAT"])
