#!/usr/bin/env bash
# Run the atheris fuzz targets, SECONDS each, with the Cython kernels checked by
# AddressSanitizer.
#
#   fuzz/run_all.sh SECONDS [TARGET ...]   targets: every registered format (apx apx_log
#                                          astep it02 spectro sp01 spf1 itt1 fcs1 it01,
#                                          plugins …) and
#                                          kernels (default: all)
#
# Per reader target: SECONDS of coverage-guided fuzzing (bindf's Python code is
# instrumented by atheris; kernels built normally, so ~2000 runs/s), then every input of
# the corpus it grew is replayed once against kernels built with -fsanitize=address.
# The kernels target runs under ASan throughout. BINDF_FUZZ_ASAN=all runs the reader
# targets under ASan throughout as well (4-5 times fewer runs per second).
#
# Needs atheris (pip install atheris), gcc with libasan, and the test dependencies (the
# seed corpus is made from tests/test_robustness.py's subjects). The working tree's own
# build is not touched: the tree is copied to a work folder (BINDF_FUZZ_WORK, default a
# new temporary folder) and built there twice (plain and ASan). gcc's libasan is
# preloaded into Python; fuzz/libfuzzer_shim.c keeps atheris' coverage visible to
# libFuzzer while it is (see there).
#
# Crashes, sanitizer reports, timeouts (-timeout) and allocations over -malloc_limit_mb
# are copied to tests/fuzz-regressions/<target>/, which tests/test_fuzz_regressions.py
# replays. Prints one line per target and exits non-zero if any target found something.
set -euo pipefail

seconds=${1:?usage: fuzz/run_all.sh SECONDS [TARGET ...]}
shift
targets=("$@")
root="$(cd "$(dirname "$0")/.." && pwd)"
python=${PYTHON:-python3}
if [ ${#targets[@]} -eq 0 ]; then  # one target per registered format, plus the kernels
    read -r -a targets <<<"$(PYTHONPATH="$root:$root/fuzz" "$python" -c \
        'import contract; print(" ".join(contract.targets()))') kernels"
fi
asan_mode=${BINDF_FUZZ_ASAN:-replay}
work=${BINDF_FUZZ_WORK:-$(mktemp -d -t bindf-fuzz-XXXXXX)}
mkdir -p "$work/corpus" "$work/artifacts" "$work/logs"

# 1. Two copies of the tree (tracked and untracked files, not ignored ones): plain and
#    ASan kernels; plus the shim.
build() {  # build FOLDER CFLAGS LDFLAGS
    rm -rf "$1" && mkdir -p "$1"
    (cd "$root" && git ls-files -z -co --exclude-standard | tar --null -cf - -T -) \
        | tar -xf - -C "$1"
    (cd "$1" && rm -f bindf/_kernels/*.so bindf/_kernels/*.c \
        && CFLAGS="$2" LDFLAGS="$3" "$python" setup.py -q build_ext --inplace \
        >"$work/logs/build-$(basename "$1").log" 2>&1) \
        || { cat "$work/logs/build-$(basename "$1").log"; exit 1; }
}
build "$work/plain" "" ""
build "$work/asan" "-fsanitize=address -fno-omit-frame-pointer -g -O1" "-fsanitize=address"
gcc -shared -fPIC -O1 -o "$work/libfuzzer_shim.so" "$root/fuzz/libfuzzer_shim.c" -ldl

# 2. Seeds.
"$python" "$root/fuzz/make_seeds.py" "$work/corpus"

# 3. Environments.
cd "$work"  # not the tree: a script run from there would import ./bindf
libasan="$(gcc -print-file-name=libasan.so)"
BINDF_LIBFUZZER="$("$python" -c 'import atheris, glob, os; print(glob.glob(os.path.join(os.path.dirname(atheris.__file__), "core_with_libfuzzer*.so"))[0])')"
export BINDF_LIBFUZZER
# Python's own allocations are leaks by ASan's standards; a report must kill the
# process so that libFuzzer saves the input; the shim is preloaded before libasan.
asan_options="detect_leaks=0:abort_on_error=1:verify_asan_link_order=0:malloc_context_size=0:quarantine_size_mb=16"
plain() { PYTHONPATH="$work/plain:$root/fuzz" "$python" "$@"; }
asan() {
    PYTHONPATH="$work/asan:$root/fuzz" ASAN_OPTIONS="$asan_options" \
        LD_PRELOAD="$work/libfuzzer_shim.so:$libasan" "$python" "$@"
}
plain -c "import bindf; assert bindf.__file__.startswith('$work/plain'), bindf.__file__"
asan -c "import bindf; assert bindf.__file__.startswith('$work/asan'), bindf.__file__"

stat() {  # stat LOG KEY: the last value libFuzzer printed for stat::KEY
    grep -oP "stat::$2:\s*\K\d+" "$1" | tail -1 || echo 0
}
flags=(-max_len=8192 -timeout=10 -malloc_limit_mb=512 -rss_limit_mb=3072 -print_final_stats=1)

status=0
printf '%-8s %10s %8s %8s %10s %8s\n' target runs exec/s new asan-runs crashes
for target in "${targets[@]}"; do
    artifacts="$work/artifacts/$target/"
    mkdir -p "$artifacts"
    corpus="$work/corpus/$target"
    fuzz="$root/fuzz/fuzz_$target.py"
    [ -e "$fuzz" ] || fuzz="$root/fuzz/fuzz_format.py"  # any format without its own file
    export BINDF_FUZZ_FORMAT="$target"
    set +e
    if [ "$target" = kernels ] || [ "$asan_mode" = all ]; then
        asan "$fuzz" "$corpus" -max_total_time="$seconds" "${flags[@]}" \
            -artifact_prefix="$artifacts" >"$work/logs/$target.log" 2>&1
        rc=$?
        replay_runs=$(stat "$work/logs/$target.log" number_of_executed_units)
    else
        plain "$fuzz" "$corpus" -max_total_time="$seconds" "${flags[@]}" \
            -artifact_prefix="$artifacts" >"$work/logs/$target.log" 2>&1
        rc=$?
        # Every input the corpus now holds, once, against the ASan kernels.
        asan "$fuzz" "$corpus" -runs=0 "${flags[@]}" -artifact_prefix="$artifacts" \
            >"$work/logs/$target-asan.log" 2>&1
        rc=$((rc | $?))
        replay_runs=$(grep -oP '^#\K\d+(?=\s+INITED)' "$work/logs/$target-asan.log" | tail -1 || echo 0)
    fi
    set -e
    log="$work/logs/$target.log"
    crashes=0
    for artifact in "$artifacts"*; do
        [ -e "$artifact" ] || continue
        crashes=$((crashes + 1))
        mkdir -p "$root/tests/fuzz-regressions/$target"
        cp "$artifact" "$root/tests/fuzz-regressions/$target/"
    done
    printf '%-8s %10s %8s %8s %10s %8s\n' "$target" "$(stat "$log" number_of_executed_units)" \
        "$(stat "$log" average_exec_per_sec)" "$(stat "$log" new_units_added)" \
        "${replay_runs:-0}" "$crashes"
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        status=1
        echo "  -> $target: exit code $rc; logs: $work/logs/$target*.log" >&2
        grep -h -m5 -E "ERROR|Finding|Error|Traceback" "$work/logs/$target"*.log >&2 || true
    fi
done
echo "work folder (logs, corpus): $work"
exit $status
