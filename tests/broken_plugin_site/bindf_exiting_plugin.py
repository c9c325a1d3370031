"""A bindf format plugin that ends the interpreter when imported (tests/test_plugins.py):
bindf must turn that into a warning, not exit."""

raise SystemExit(3)
