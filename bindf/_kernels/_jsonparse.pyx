# cython: language_level=3
"""A JSON parser for the headers bindf accepts as they are (see ``bindf/_header.py``).

The standard library's scanner needs an ``object_pairs_hook`` to refuse duplicate keys,
and with the hook it builds a list of pairs per object and calls back into Python. Parsing
an AstroPix header that way took 40 µs, a third of reading a small run. This parser takes
the common case, a valid header, in one pass over the UTF-8 bytes (11 µs; 6.5 µs on a
later machine, where it took 9.3 before short strings came from a cache of those seen
before, see ``cached_string``), and refuses duplicate keys itself.

It only ever *accepts*. Anything it does not take as it is (invalid JSON, a repeated
key, ``NaN``/``Infinity``, a number beyond a double such as ``1e999``, a lone UTF-16
surrogate, nesting deeper than ``max_depth``,
an integer beyond the interpreter's digit limit) makes :func:`parse_object` return
``None``, and the header module parses the text again with the standard library, whose
error messages and positions bindf reports. So this parser needs to agree with ``json``
only on what it accepts, and there it builds exactly the same values: the same grammar
(RFC 8259), integers exactly (in C up to 18 digits, through ``int`` beyond), floats
through ``PyOS_string_to_double`` (the correctly rounded conversion ``float()`` and
``json`` use), strings with the same escapes. ``tests/test_header.py`` and
``tests/test_kernel_fuzz.py`` check that agreement on generated documents.

Every read is bounds checked by hand: the parser must be memory safe on any bytes.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.math cimport isinf
from libc.string cimport memcmp, memcpy
from cpython.ref cimport Py_INCREF, Py_XDECREF


cdef extern from "Python.h":
    # Returns a borrowed reference: declared as a pointer, so Cython does not release it.
    PyObject* PyDict_SetDefault(object mapping, object key, object default) except NULL
    double PyOS_string_to_double(const char* s, char** endptr, void* overflow_exception) except? -1.0
    object PyLong_FromLongLong(long long value)
    object PyFloat_FromDouble(double value)
    Py_ssize_t PyUnicode_GET_LENGTH(object text)
    void* PyUnicode_DATA(object text)


class _Unhandled(Exception):
    """Raised inside the parser for input it leaves to the standard library."""


cdef enum:
    NUMBER_BUFFER = 64    # longest number copied to the stack (longer: through Python)
    FAST_INT_DIGITS = 18  # integers of at most this many digits fit an int64


cdef inline bint is_space(uint8_t c) noexcept nogil:
    return c == 0x20 or c == 0x09 or c == 0x0A or c == 0x0D


cdef inline bint is_digit(uint8_t c) noexcept nogil:
    return 0x30 <= c <= 0x39


cdef inline int hex_value(uint8_t c) noexcept nogil:
    if 0x30 <= c <= 0x39:
        return c - 0x30
    if 0x41 <= c <= 0x46:
        return c - 0x41 + 10
    if 0x61 <= c <= 0x66:
        return c - 0x61 + 10
    return -1


cdef inline Py_ssize_t put_utf8(uint8_t* out, uint32_t cp) noexcept nogil:
    """Write code point ``cp`` (not a surrogate) as UTF-8; return the byte count."""
    if cp < 0x80:
        out[0] = <uint8_t>cp
        return 1
    if cp < 0x800:
        out[0] = <uint8_t>(0xC0 | (cp >> 6))
        out[1] = <uint8_t>(0x80 | (cp & 0x3F))
        return 2
    if cp < 0x10000:
        out[0] = <uint8_t>(0xE0 | (cp >> 12))
        out[1] = <uint8_t>(0x80 | ((cp >> 6) & 0x3F))
        out[2] = <uint8_t>(0x80 | (cp & 0x3F))
        return 3
    out[0] = <uint8_t>(0xF0 | (cp >> 18))
    out[1] = <uint8_t>(0x80 | ((cp >> 12) & 0x3F))
    out[2] = <uint8_t>(0x80 | ((cp >> 6) & 0x3F))
    out[3] = <uint8_t>(0x80 | (cp & 0x3F))
    return 4


# -- strings seen before ---------------------------------------------------------------
#
# The headers of a campaign's runs repeat the same keys (and many of the same short
# values), file after file: an AstroPix header holds ~85 keys. Making each key's str anew
# (decoding, then hashing it for the dict) was a third of parsing such a header. A short
# ASCII string is looked up here first, by a hash of its bytes: one slot per hash value,
# holding the last string that landed there (a collision simply replaces it). A hit
# hands out that same str object, whose hash Python has kept. Strings are immutable, so
# sharing them between parses changes nothing a caller can see. Only touched with the
# GIL held (the parser builds Python objects throughout).

cdef enum:
    CACHE_SLOTS = 1024        # a power of two
    MAX_CACHED_STRING = 48    # longer strings are rarely repeated keys

cdef PyObject* STRING_CACHE[CACHE_SLOTS]   # NULL (empty) at start, as a C static


cdef object cached_string(const uint8_t* s, Py_ssize_t n):
    """The str of the ``n`` bytes at ``s`` (the contents of a JSON string without
    escapes, UTF-8): the cached one when it is there, else a new one, cached if ASCII."""
    cdef uint64_t h = 14695981039346656037ULL   # FNV-1a
    cdef uint8_t high = 0
    cdef Py_ssize_t k
    cdef PyObject* seen
    for k in range(n):
        high |= s[k]
        h = (h ^ s[k]) * 1099511628211ULL
    if high >= 0x80:  # not ASCII: decoded (and checked as UTF-8) as any string is
        return PyUnicode_DecodeUTF8(<const char*>s, n, "strict")
    cdef Py_ssize_t slot = <Py_ssize_t>((h ^ (h >> 29)) & (CACHE_SLOTS - 1))
    seen = STRING_CACHE[slot]
    if (seen != NULL and PyUnicode_GET_LENGTH(<object>seen) == n
            and memcmp(PyUnicode_DATA(<object>seen), s, n) == 0):
        return <object>seen  # (a compact ASCII str: one byte per character, as here)
    text = PyUnicode_DecodeUTF8(<const char*>s, n, "strict")
    Py_INCREF(text)  # the cache's reference
    STRING_CACHE[slot] = <PyObject*>text
    Py_XDECREF(seen)
    return text


cdef class _Parser:
    cdef const uint8_t* p
    cdef Py_ssize_t n
    cdef Py_ssize_t pos
    cdef int max_depth

    cdef inline void skip_space(self) noexcept:
        while self.pos < self.n and is_space(self.p[self.pos]):
            self.pos += 1

    cdef object value(self, int depth):
        cdef uint8_t c
        if self.pos >= self.n:
            raise _Unhandled
        c = self.p[self.pos]
        if c == 0x7B:  # {
            return self.object(depth + 1)
        if c == 0x5B:  # [
            return self.array(depth + 1)
        if c == 0x22:  # "
            return self.string()
        if c == 0x2D or is_digit(c):
            return self.number()
        if self.literal(b"true", 4):
            return True
        if self.literal(b"false", 5):
            return False
        if self.literal(b"null", 4):
            return None
        raise _Unhandled  # NaN, Infinity or not JSON

    cdef bint literal(self, const char* word, Py_ssize_t length) noexcept:
        cdef Py_ssize_t i
        if self.n - self.pos < length:
            return False
        for i in range(length):
            if self.p[self.pos + i] != <uint8_t>word[i]:
                return False
        self.pos += length
        return True

    cdef dict object(self, int depth):
        cdef dict result = {}
        cdef object key, item
        cdef Py_ssize_t size
        if depth > self.max_depth:
            raise _Unhandled
        self.pos += 1  # the {
        self.skip_space()
        if self.pos < self.n and self.p[self.pos] == 0x7D:
            self.pos += 1
            return result
        while True:
            if self.pos >= self.n or self.p[self.pos] != 0x22:
                raise _Unhandled
            key = self.string()
            self.skip_space()
            if self.pos >= self.n or self.p[self.pos] != 0x3A:
                raise _Unhandled
            self.pos += 1
            self.skip_space()
            item = self.value(depth)
            # One look-up that inserts the pair, or finds the key already there (the
            # dict did not grow: compared by size, as the values may be one object).
            size = len(result)
            PyDict_SetDefault(result, key, item)
            if len(result) == size:
                raise _Unhandled  # a repeated key: the standard library names it
            self.skip_space()
            if self.pos >= self.n:
                raise _Unhandled
            if self.p[self.pos] == 0x2C:  # ,
                self.pos += 1
                self.skip_space()
            elif self.p[self.pos] == 0x7D:  # }
                self.pos += 1
                return result
            else:
                raise _Unhandled

    cdef list array(self, int depth):
        cdef list result = []
        if depth > self.max_depth:
            raise _Unhandled
        self.pos += 1  # the [
        self.skip_space()
        if self.pos < self.n and self.p[self.pos] == 0x5D:
            self.pos += 1
            return result
        while True:
            result.append(self.value(depth))
            self.skip_space()
            if self.pos >= self.n:
                raise _Unhandled
            if self.p[self.pos] == 0x2C:
                self.pos += 1
                self.skip_space()
            elif self.p[self.pos] == 0x5D:  # ]
                self.pos += 1
                return result
            else:
                raise _Unhandled

    cdef object string(self):
        """The string whose opening quote is at ``pos``; ``pos`` ends after its close."""
        cdef Py_ssize_t start = self.pos + 1
        cdef Py_ssize_t i = start
        cdef bint escaped = False
        cdef uint8_t c
        while True:
            if i >= self.n:
                raise _Unhandled  # unterminated
            c = self.p[i]
            if c == 0x22:
                break
            if c < 0x20:
                raise _Unhandled  # a raw control character: invalid in JSON strings
            if c == 0x5C:
                escaped = True
                i += 1  # the escaped byte is checked by unescape()
            i += 1
        self.pos = i + 1
        if escaped:
            return self.unescape(start, i)
        if i - start <= MAX_CACHED_STRING:
            return cached_string(self.p + start, i - start)
        return PyUnicode_DecodeUTF8(<const char*>self.p + start, i - start, "strict")

    cdef object unescape(self, Py_ssize_t start, Py_ssize_t end):
        """The string of the bytes ``[start, end)``, escapes resolved. The UTF-8 of an
        escape is never longer than the escape, so ``end - start`` bytes suffice."""
        cdef uint8_t* out = <uint8_t*>PyMem_Malloc(end - start + 1)
        cdef Py_ssize_t i = start, k = 0
        cdef uint32_t cp, low
        cdef uint8_t c
        if out == NULL:
            raise MemoryError()
        try:
            while i < end:
                c = self.p[i]
                if c != 0x5C:
                    out[k] = c
                    k += 1
                    i += 1
                    continue
                if i + 1 >= end:
                    raise _Unhandled
                c = self.p[i + 1]
                i += 2
                if c == 0x22 or c == 0x5C or c == 0x2F:  # \" \\ \/
                    out[k] = c
                elif c == 0x62:  # \b
                    out[k] = 0x08
                elif c == 0x66:  # \f
                    out[k] = 0x0C
                elif c == 0x6E:  # \n
                    out[k] = 0x0A
                elif c == 0x72:  # \r
                    out[k] = 0x0D
                elif c == 0x74:  # \t
                    out[k] = 0x09
                elif c == 0x75:  # \uXXXX
                    cp = self.hex4(i, end)
                    i += 4
                    if 0xDC00 <= cp <= 0xDFFF:
                        raise _Unhandled  # a lone low surrogate
                    if 0xD800 <= cp <= 0xDBFF:
                        # Only a high surrogate followed by a low one is a character.
                        if i + 6 > end or self.p[i] != 0x5C or self.p[i + 1] != 0x75:
                            raise _Unhandled
                        low = self.hex4(i + 2, end)
                        if not 0xDC00 <= low <= 0xDFFF:
                            raise _Unhandled
                        i += 6
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
                    k += put_utf8(out + k, cp)
                    continue
                else:
                    raise _Unhandled  # not a JSON escape
                k += 1
            return PyUnicode_DecodeUTF8(<const char*>out, k, "strict")
        finally:
            PyMem_Free(out)

    cdef uint32_t hex4(self, Py_ssize_t i, Py_ssize_t end) except? 0xFFFFFFFF:
        cdef uint32_t cp = 0
        cdef int digit
        cdef Py_ssize_t j
        if i + 4 > end:
            raise _Unhandled
        for j in range(i, i + 4):
            digit = hex_value(self.p[j])
            if digit < 0:
                raise _Unhandled
            cp = (cp << 4) | <uint32_t>digit
        return cp

    cdef Py_ssize_t digits(self, Py_ssize_t i) except -1:
        """The end of the run of digits at ``i``, which must hold at least one."""
        if i >= self.n or not is_digit(self.p[i]):
            raise _Unhandled
        while i < self.n and is_digit(self.p[i]):
            i += 1
        return i

    cdef object number(self):
        """The number at ``pos``, by JSON's grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?"""
        cdef Py_ssize_t start = self.pos, i = self.pos, digits_start, j
        cdef bint negative = False, is_float = False
        cdef int64_t whole = 0
        cdef char buffer[NUMBER_BUFFER]
        if self.p[i] == 0x2D:
            negative = True
            i += 1
        digits_start = i
        if i < self.n and self.p[i] == 0x30:
            i += 1  # a leading zero stands alone ("01" is not JSON)
        else:
            i = self.digits(i)  # none at all: "-" alone, or -Infinity
        if i < self.n and self.p[i] == 0x2E:  # .
            i = self.digits(i + 1)
            is_float = True
        if i < self.n and (self.p[i] == 0x65 or self.p[i] == 0x45):  # e E
            i += 1
            if i < self.n and (self.p[i] == 0x2B or self.p[i] == 0x2D):
                i += 1
            i = self.digits(i)
            is_float = True
        self.pos = i
        if not is_float and i - digits_start <= FAST_INT_DIGITS:
            for j in range(digits_start, i):
                whole = whole * 10 + (self.p[j] - 0x30)
            return PyLong_FromLongLong(-whole if negative else whole)
        cdef double real
        if i - start >= NUMBER_BUFFER:
            # Long numbers: the same conversions, through Python (``int`` refuses more
            # digits than the interpreter's limit with ValueError, as ``json`` does).
            text = (<const char*>self.p)[start:i]
            if not is_float:
                return int(text)
            real = float(text)
        else:
            memcpy(buffer, self.p + start, i - start)
            buffer[i - start] = 0
            if not is_float:
                return int(buffer[:i - start])
            real = PyOS_string_to_double(buffer, NULL, NULL)
        if isinf(real):
            raise _Unhandled  # beyond a double (1e999): the header module refuses it
        return PyFloat_FromDouble(real)


def parse_object(const uint8_t[::1] raw, int max_depth) -> dict | None:
    """The JSON object in ``raw`` (UTF-8 bytes), or ``None`` when ``raw`` is anything
    else bindf must not take as it is: not an object, not valid JSON, a repeated key,
    ``NaN``/``Infinity``, a lone surrogate escape, nesting deeper than ``max_depth``
    (the top-level object is depth 1). The caller then parses ``raw`` with the
    standard library for the error to report."""
    cdef _Parser parser = _Parser()
    cdef object result
    if raw is None or raw.shape[0] == 0:
        return None
    parser.p = &raw[0]
    parser.n = raw.shape[0]
    parser.pos = 0
    parser.max_depth = max_depth
    try:
        parser.skip_space()
        if parser.pos >= parser.n or parser.p[parser.pos] != 0x7B:
            return None
        result = parser.object(1)
        parser.skip_space()
        if parser.pos != parser.n:
            return None  # extra data after the object
        return result
    except (_Unhandled, UnicodeDecodeError, ValueError):
        return None


def nesting_depth(const uint8_t[::1] raw) -> int:
    """The deepest nesting of ``[``/``{`` outside strings in the UTF-8 bytes ``raw``,
    counted before parsing so that a header of a million ``[`` never reaches the
    standard library's recursive parser.

    A string starts and ends at an unescaped ``"``; inside one, a backslash escapes the
    byte after it. Bytes of multi-byte UTF-8 characters are all >= 0x80, so none is
    taken for a quote, backslash or bracket. Any bytes are accepted (an unmatched
    closing bracket makes the running depth negative; the parser refuses such text).
    """
    cdef Py_ssize_t i = 0, n = 0
    cdef Py_ssize_t depth = 0, deepest = 0
    cdef bint in_string = False
    cdef uint8_t c
    if raw is None:
        return 0
    n = raw.shape[0]
    with nogil:
        while i < n:
            c = raw[i]
            if in_string:
                if c == 0x5C:  # backslash: the next byte is escaped
                    i += 1
                elif c == 0x22:
                    in_string = False
            elif c == 0x22:
                in_string = True
            elif c == 0x5B or c == 0x7B:
                depth += 1
                if depth > deepest:
                    deepest = depth
            elif c == 0x5D or c == 0x7D:
                depth -= 1
            i += 1
    return deepest
