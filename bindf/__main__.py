"""``python -m bindf`` is the ``bindf`` command."""

from .cli import main

raise SystemExit(main())
