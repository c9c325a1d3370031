"""Frames as bindf sees them: the bindf info attached to a pandas, polars or Arrow
frame, and any of them viewed as an Arrow table.

This is the low floor that the writers, Parquet export, the frontends and the ``df.bindf``
accessor all stand on; it imports nothing of bindf above :mod:`bindf.arrow`. pandas and
polars are recognised by their module name, so this module imports neither.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from .arrow import info_from_metadata

# polars frames have no metadata slot. Their bindf info lives here, keyed by id(), with a
# weak reference that says whether the frame under that id is still the one the info was
# attached to: the entry is dropped when the frame is garbage collected, but a Ctrl-C
# landing in that finalizer skips it, and a later frame given the same id must not
# report another read's header.
_POLARS_INFO: dict[int, _PolarsInfo] = {}


class _PolarsInfo:
    __slots__ = ("frame", "info", "plan", "required")

    def __init__(self, frame: Any, info: dict[str, Any], required: frozenset[str],
                 plan: Callable[[], Any] | None) -> None:
        self.frame = weakref.ref(frame)
        self.info = info
        #: A bindf scan's LazyFrame: a new ReadPlan of the scan (to stream it to a file)
        self.plan = plan
        #: The columns that the Arrow schema the frame was made from declared
        #: non-nullable: polars declares every column nullable, and Arrow taken back from
        #: the frame (a Parquet file written from a frame fresh from a read) declares them
        #: so again, as a read into Arrow does. pandas types a nullable integer column by
        #: that declaration, not by whether this file's rows hold a null.
        self.required = required


def _library(frame: Any) -> str:
    return type(frame).__module__.split(".", 1)[0]


_READ_ONLY = ("bindf's info (df.attrs['bindf']) is shared by every frame pandas derives "
              "from a read, and so cannot change in place: change a copy, such as "
              "header = df.bindf.header.copy() (plain dicts and lists all the way down)")


class _Shared:
    """What :class:`SharedDict` and :class:`SharedList` have alike: a copy, deep or not, is
    the object itself, and changing it in place is a ``TypeError`` saying what to do."""

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self

    def __copy__(self) -> Any:
        return self

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(_READ_ONLY)


class SharedDict(_Shared, dict):  # type: ignore[type-arg]
    """A read-only dict of bindf info that every frame pandas derives from a read shares.

    pandas deep-copies ``attrs`` into each frame it derives (a slice, a column
    arithmetic, every group of a ``groupby``): the info of a read of thousands of files
    (every source path) made each such step cost milliseconds. Read-only, a deep copy of
    it can be itself. ``x.copy()`` gives ordinary dicts and lists to change, all the
    way down (``dict(x)`` copies the top level only)."""

    __slots__ = ()

    def __reduce__(self) -> Any:
        return (SharedDict, (dict(self),))

    def copy(self) -> dict[Any, Any]:  # type: ignore[override]
        """A plain copy to change, its dicts and lists copied too."""
        return unshared(self)  # type: ignore[no-any-return]

    __setitem__ = __delitem__ = __ior__ = _Shared._refuse  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _Shared._refuse  # type: ignore[assignment]


class SharedList(_Shared, list):  # type: ignore[type-arg]
    """A read-only list inside :class:`SharedDict` (a header's lists, the sources)."""

    __slots__ = ()

    def __reduce__(self) -> Any:
        return (SharedList, (list(self),))

    def copy(self) -> list[Any]:  # type: ignore[override]
        """A plain copy to change, its dicts and lists copied too."""
        return unshared(self)  # type: ignore[no-any-return]

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _Shared._refuse  # type: ignore[assignment]
    append = extend = insert = pop = remove = clear = sort = reverse = _Shared._refuse  # type: ignore[assignment]


def shared(value: Any) -> Any:
    """``value`` with every dict and list in it made a :class:`SharedDict` /
    :class:`SharedList` (once per read: the header's few values and the source list)."""
    if isinstance(value, (SharedDict, SharedList)):
        return value
    if isinstance(value, dict):
        return SharedDict((k, shared(v)) for k, v in value.items())
    if isinstance(value, list):
        return SharedList(shared(v) for v in value)
    return value


def unshared(value: Any) -> Any:
    """A plain copy of (shared) info that may be changed: its dicts and lists copied, the
    values in them, immutable JSON scalars, not."""
    if isinstance(value, dict):
        return {key: unshared(v) if isinstance(v, (dict, list)) else v
                for key, v in value.items()}
    if isinstance(value, list):
        return [unshared(v) if isinstance(v, (dict, list)) else v for v in value]
    return value


def set_pandas_info(frame: Any, info: Mapping[str, Any]) -> None:
    """Attach bindf info to a pandas frame (``attrs["bindf"]``), shared and read-only."""
    frame.attrs["bindf"] = shared(dict(info))


def set_polars_info(frame: Any, info: dict[str, Any], schema: pa.Schema | None = None, *,
                    plan: Callable[[], Any] | None = None) -> None:
    """Attach bindf info to a polars frame (read back by ``frame.bindf``); ``schema``:
    the Arrow schema the frame was converted from, whose non-nullable columns
    :func:`to_arrow_table` declares so again; ``plan``: for a scan's LazyFrame, what
    makes a ``ReadPlan`` of its rows (see :func:`polars_scan_plan`)."""
    key = id(frame)
    required = frozenset() if schema is None else frozenset(
        f.name for f in schema if not f.nullable)
    _POLARS_INFO[key] = _PolarsInfo(frame, info, required, plan)
    weakref.finalize(frame, _POLARS_INFO.pop, key, None)


def _polars_entry(frame: Any) -> _PolarsInfo | None:
    entry = _POLARS_INFO.get(id(frame))
    return entry if entry is not None and entry.frame() is frame else None


def get_polars_info(frame: Any) -> dict[str, Any] | None:
    entry = _polars_entry(frame)
    return None if entry is None else entry.info


def polars_scan_plan(frame: Any) -> Callable[[], Any] | None:
    """For the LazyFrame a bindf scan returned (not one a polars operation made from
    it), what makes a ``ReadPlan`` of its rows: a writer streams those batches instead
    of collecting the frame. None for any other frame."""
    entry = _polars_entry(frame) if _library(frame) == "polars" else None
    return None if entry is None else entry.plan


def _with_required_columns(table: pa.Table, required: frozenset[str]) -> pa.Table:
    """``table`` with the ``required`` columns that hold no null declared non-nullable."""
    fields = [field.with_nullable(False)
              if field.name in required and table.column(i).null_count == 0 else field
              for i, field in enumerate(table.schema)]
    if all(a is b for a, b in zip(fields, table.schema)):
        return table
    return pa.Table.from_arrays(table.columns, schema=pa.schema(fields, table.schema.metadata))


def info_of(frame: Any) -> dict[str, Any] | None:
    """The bindf info of any supported frame (pandas, polars, Arrow), or ``None``."""
    if isinstance(frame, (pa.Table, pa.RecordBatch)):
        return info_from_metadata(frame.schema.metadata)
    library = _library(frame)
    if library == "pandas":
        import pandas as pd

        if isinstance(frame, pd.DataFrame):
            return frame.attrs.get("bindf")
    if library == "polars":
        import polars as pl

        if isinstance(frame, (pl.DataFrame, pl.LazyFrame)):
            return get_polars_info(frame)
    raise TypeError(f"expected a pandas, polars or Arrow frame, not {type(frame).__name__}")


def to_arrow_table(frame: Any, *, keep_index: bool = False, keep_na: bool = False) -> pa.Table:
    """View a pandas/polars/Arrow frame (or a dict of columns) as a ``pyarrow.Table``.

    The one frame → Arrow conversion: the writers and Parquet export both use it. pandas
    frames keep their pandas schema metadata (so a Parquet file restores their dtypes),
    and NaN stays a value unless ``keep_na`` (see :func:`_pandas_to_arrow`).

    ``keep_index`` (pandas frames): keep the index as pandas' own ``to_parquet`` does, a
    ``RangeIndex`` in the pandas metadata only and any other index as columns after the
    frame's (the Parquet export: a groupby result keeps its keys). Without it the index
    is dropped: the format writers take columns only.

    ``keep_na`` (pandas frames; the Parquet export): pandas' missing values become nulls,
    as in pandas' own ``to_parquet``: NaN in a numpy float column (where pandas reads a
    null, an A-STEP ``tot_us`` say, and where it has no other way to say "missing") and
    ``pd.NA`` in a nullable column. Without it (the format writers, whose floats have no
    missing value but NaN) both are NaN: a file's NaN is a value it stores, and pandas 3
    reads NaN into a nullable float column as ``pd.NA``, so a frame read with
    ``dtype_backend="numpy_nullable"`` could not be written back otherwise.

    Errors name what to mend: a string that UTF-8 cannot encode (a lone surrogate), or a
    value Arrow cannot store with the rest of its column (``"n/a"`` in an object column
    of numbers), names its column and row; a dict of columns of different lengths gives
    each length.
    """
    try:
        return _as_arrow_table(frame, keep_index, keep_na)
    except UnicodeEncodeError as exc:
        where = _place_text(_failing_place(frame, UnicodeEncodeError))
        raise ValueError(f"{where}holds a string that is not encodable as UTF-8 ({exc}); "
                         "files hold UTF-8") from None
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        lengths = _column_lengths(frame)
        if len(set(lengths.values())) > 1:
            raise ValueError(f"the columns have different lengths: {lengths}") from None
        place = _failing_place(frame, (pa.ArrowInvalid, pa.ArrowTypeError))
        if place is None:
            raise
        why = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        what = ("cannot be stored as an Arrow column" if place[1] is None
                else "holds a value that Arrow cannot store with the rest of the column")
        raise ValueError(f"{_place_text(place)}{what} ({why})") from None


def _as_arrow_table(frame: Any, keep_index: bool, keep_na: bool = False) -> pa.Table:
    """:func:`to_arrow_table` without its readable errors."""
    if isinstance(frame, pa.Table):
        return frame
    if isinstance(frame, pa.RecordBatch):
        return pa.Table.from_batches([frame])
    library = _library(frame)
    if library == "polars":
        import polars as pl

        if isinstance(frame, pl.LazyFrame):
            frame = frame.collect()
        if isinstance(frame, pl.DataFrame):
            entry = _polars_entry(frame)
            table = frame.to_arrow()
            return _with_required_columns(table, entry.required) if entry else table
    if library == "pandas":
        import pandas as pd

        if isinstance(frame, pd.DataFrame):
            return _pandas_to_arrow(frame, keep_index, keep_na)
    if isinstance(frame, Mapping):
        return pa.table({str(k): v for k, v in frame.items()})
    raise TypeError(
        "expected a pandas, polars or Arrow frame (or a dict of columns), "
        f"not {type(frame).__name__}"
    )


def _column_lengths(frame: Any) -> dict[str, int]:
    """The length of each column of a dict of columns (the one input whose columns can
    differ in length), for the error Arrow gives when they do; ``{}`` for other inputs."""
    if not isinstance(frame, Mapping):
        return {}
    return {str(name): len(values) for name, values in frame.items()
            if hasattr(values, "__len__") and not isinstance(values, (str, bytes))}


def _place_text(place: tuple[Any, int | None] | None) -> str:
    """``"column 'x', row 150, "`` (or without the row, or ``""``) for messages."""
    if place is None:
        return ""
    name, row = place
    return f"column {name!r} " if row is None else f"column {name!r}, row {row}, "


def _failing_place(frame: Any, errors: type[Exception] | tuple[type[Exception], ...],
                   ) -> tuple[Any, int | None] | None:
    """``(column, row)`` where the conversion of ``frame`` (pandas or a dict of columns,
    the inputs that hold Python objects) to Arrow raises one of ``errors`` (row None:
    the column as a whole, a 2-D array say), else None. Called only after the whole
    frame failed: its columns are tried one by one, and the failing column's row found
    by bisection over prefixes (a few conversions; Arrow's message names the value, not
    where it is)."""
    if isinstance(frame, Mapping):
        parts = [(name, lambda n, name=name, values=values: {name: values[:n]}, len(values))
                 for name, values in frame.items() if hasattr(values, "__len__")]
    elif hasattr(frame, "iloc") and hasattr(frame, "columns"):
        parts = [(name, lambda n, i=i: frame.iloc[:n, [i]], len(frame))
                 for i, name in enumerate(frame.columns)]
    else:
        return None

    def fails(part: Any) -> bool:
        try:
            _as_arrow_table(part, False)
        except errors:
            return True
        return False

    for name, rows, n in parts:
        if not fails(rows(n)):
            continue
        if fails(rows(0)):  # the column as a whole, not one of its values
            return name, None
        low, high = 0, n  # the first `high` rows fail, the first `low` not
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if fails(rows(middle)) else (middle, high)
        return name, low
    return None


def _pandas_to_arrow(frame: Any, keep_index: bool = False, keep_na: bool = False) -> pa.Table:
    """pandas → Arrow, keeping NaN as a value unless ``keep_na``.

    ``pa.Table.from_pandas`` turns NaN in float columns into nulls (pandas' missing-value
    convention), but NaN is a legitimate ``f64`` the files store; for the format writers
    plain numpy float columns are therefore put back without that mapping, and nullable
    float columns' NA becomes NaN too. ``keep_na`` (the Parquet export) keeps pandas'
    convention (see :func:`to_arrow_table`). Other nullable extension dtypes keep their
    NA as null either way (and the writers refuse nulls).
    """
    import pandas as pd

    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        raise ValueError(f"the frame has duplicate column names: {names}")
    # preserve_index=None is pandas' to_parquet default (see to_arrow_table). Index
    # columns come after the frame's, so column i below is still the frame's column i.
    table = pa.Table.from_pandas(frame, preserve_index=None if keep_index else False)
    if keep_na:
        return table
    for i in range(frame.shape[1]):
        series = frame.iloc[:, i]
        if not table.column(i).null_count:
            continue
        if isinstance(series.dtype, np.dtype) and series.dtype.kind == "f":
            values = series.to_numpy()
        elif isinstance(series.dtype, (pd.Float32Dtype, pd.Float64Dtype)):
            values = series.to_numpy(dtype=series.dtype.numpy_dtype, na_value=np.nan)
        else:
            continue
        table = table.set_column(i, table.field(i).with_type(pa.from_numpy_dtype(values.dtype)),
                                 pa.array(values, from_pandas=False))
    return table
