"""Check that a source distribution holds the repository: every file git tracks but the
CI script and the ignore file (MANIFEST.in says why), and nothing else but what the
build adds (package metadata, the C files Cython generates from the kernels).

    python ci/check_sdist.py dist/bindf-X.tar.gz    (run from the checkout)
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tarfile

NOT_SHIPPED = {".ci/run", ".gitignore"}
BUILD_ADDS = ("PKG-INFO", "setup.cfg", "bindf.egg-info/*", "bindf/_kernels/*.c")


def main(sdist: str) -> int:
    with tarfile.open(sdist) as archive:
        # Every member is under one top folder, bindf-<version>/.
        shipped = {name.split("/", 1)[1] for name in archive.getnames()
                   if "/" in name and archive.getmember(name).isfile()}
    tracked = set(subprocess.run(["git", "ls-files"], capture_output=True, text=True,
                                 check=True).stdout.splitlines())
    missing = sorted(tracked - NOT_SHIPPED - shipped)
    extra = sorted(name for name in shipped - tracked
                   if not any(fnmatch.fnmatch(name, pattern) for pattern in BUILD_ADDS))
    for name in missing:
        print(f"missing from the sdist: {name}")
    for name in extra:
        print(f"in the sdist but not tracked by git: {name}")
    print(f"{sdist}: {len(shipped)} files, {len(missing)} missing, {len(extra)} extra")
    return 1 if missing or extra else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
