"""A broken bindf format plugin: importing it fails (tests/test_plugins.py)."""

raise ImportError("this plugin is broken on purpose")
