"""Write the seed corpus of every fuzz target: the robustness tests' small valid files.

``python fuzz/make_seeds.py DIR`` makes ``DIR/<target>/seed-<subject>-<config>``: each
subject file of the target's format family, prefixed with every configuration byte (see
``_harness.py``). Needs the test dependencies (the subjects live in
``tests/test_robustness.py``).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

def main(out: Path) -> None:
    import test_robustness as robustness
    from contract import configs_for, targets

    # Each target is seeded with the robustness subjects of its format (for formats
    # without hand-written subjects, the registry's sample of the format).
    for target in targets():
        families = [target]
        configs = configs_for(target)
        folder = out / target
        folder.mkdir(parents=True, exist_ok=True)
        for subject in robustness.SUBJECTS:
            if subject.family not in families:
                continue
            data = robustness.subject_bytes(subject)
            for i in range(len(configs)):
                (folder / f"seed-{subject.name}-{i}").write_bytes(bytes([i]) + data)
        # The regression inputs of this format are seeds too.
        for crash in sorted((HERE.parent / "tests" / "fuzz-regressions" / target).glob("*")):
            digest = hashlib.sha1(crash.read_bytes()).hexdigest()[:12]
            (folder / f"regression-{digest}").write_bytes(crash.read_bytes())
    (out / "kernels").mkdir(parents=True, exist_ok=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
