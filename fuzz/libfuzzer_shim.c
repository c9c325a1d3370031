/* Lets atheris' libFuzzer see the coverage of Python code while gcc's AddressSanitizer
 * runtime is preloaded (fuzz/run_all.sh).
 *
 * gcc's libasan defines the sanitizer-coverage callbacks as weak no-ops. Preloaded, it
 * comes first in symbol lookup, so atheris' calls that register its coverage counters
 * land there and libFuzzer never sees any coverage ("no interesting inputs"). Atheris
 * has a mode for a preloaded libFuzzer (normally clang's asan_with_fuzzer.so): it then
 * takes these symbols from the process. This shim, preloaded before libasan, provides
 * them by forwarding to the libFuzzer inside atheris' own core_with_libfuzzer module
 * (path in BINDF_LIBFUZZER), loaded privately on first use.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void *resolve(const char *name) {
    static void *lib;
    void *f;
    if (!lib) {
        const char *path = getenv("BINDF_LIBFUZZER");
        lib = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
        if (!lib) {
            fprintf(stderr, "libfuzzer_shim: cannot load BINDF_LIBFUZZER=%s: %s\n",
                    path ? path : "(unset)", dlerror());
            abort();
        }
    }
    f = dlsym(lib, name);
    if (!f) {
        fprintf(stderr, "libfuzzer_shim: %s not found\n", name);
        abort();
    }
    return f;
}

#define FORWARD(ret, name, params, args)                                    \
    ret name params {                                                       \
        static ret(*real) params;                                           \
        if (!real) real = (ret(*) params)resolve(#name);                    \
        return real args;                                                   \
    }

typedef int (*test_one_input)(const uint8_t *, size_t);

FORWARD(int, LLVMFuzzerRunDriver, (int *argc, char ***argv, test_one_input cb),
        (argc, argv, cb))
FORWARD(size_t, LLVMFuzzerMutate, (uint8_t *data, size_t size, size_t max_size),
        (data, size, max_size))
FORWARD(void, __sanitizer_cov_8bit_counters_init, (uint8_t *start, uint8_t *stop),
        (start, stop))
FORWARD(void, __sanitizer_cov_pcs_init, (const uintptr_t *begin, const uintptr_t *end),
        (begin, end))
FORWARD(void, __sanitizer_cov_trace_cmp8, (uint64_t a, uint64_t b), (a, b))
FORWARD(void, __sanitizer_cov_trace_const_cmp8, (uint64_t a, uint64_t b), (a, b))
FORWARD(void, __sanitizer_weak_hook_memcmp,
        (void *pc, const void *s1, const void *s2, size_t n, int result),
        (pc, s1, s2, n, result))
