"""mkdocs hooks: pages that quote the program itself stay true by construction.

``<!-- bindf-help: SUBCOMMAND -->`` in a page is replaced by the ``--help`` text of
``bindf SUBCOMMAND`` (``<!-- bindf-help: -->`` for the top-level command), generated from
``bindf.cli.build_parser()`` at a fixed width when the site is built, so the CLI page
never drifts from the argparse definitions. An unknown subcommand fails the build.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

#: Width the help texts are wrapped to (argparse reads $COLUMNS).
HELP_WIDTH = 88

_MARKER = re.compile(r"<!--\s*bindf-help:\s*([\w-]*)\s*-->")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public accessor for subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_text(command: str) -> str:
    from bindf.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH)
    try:
        parser = build_parser()
        if command:
            commands = _subparsers(parser)
            if command not in commands:
                raise ValueError(f"<!-- bindf-help: {command} -->: bindf has no such command "
                                 f"(it has {', '.join(commands)})")
            parser = commands[command]
        return parser.format_help().rstrip()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return _MARKER.sub(lambda m: "```text\n" + _help_text(m.group(1)) + "\n```", markdown)
