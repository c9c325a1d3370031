"""A bindf format plugin used by the tests: declared only through the entry point in
``../bindf_test_plugin-1.0.dist-info/entry_points.txt`` (group ``bindf.formats``).

``tests/conftest.py`` puts ``tests/plugin_site`` on ``sys.path`` (as installing the
package would) and calls ``bindf.discover_plugins()``; ``tests/test_plugins.py`` also
checks, in a fresh interpreter, that ``pd.read_tpl`` exists right after ``import bindf``
and that this module is only imported on first use.
"""

import bindf

#: A counter dump: "TPL1" | u32 length | JSON {"channels": [...]}, then records of
#: f64 time and one u32 count per channel.
spec = bindf.FixedRecordFormat(
    "tpl", magic=b"TPL1", header="json",
    dtype=lambda h: [("t_ns", "<f8")] + [(f"ch{c + 1}", "<u4") for c in h["channels"]],
    extensions=(".tpl",), description="test plugin counter dump (TPL1)",
    example_header={"channels": [0, 2]},
)
