"""Griffe extension: document functions a package creates at import time.

``bindf.read_apx``, ``bindf.scan_apx`` … are made by factories when ``bindf`` is imported
(one per registered format), so their ``__module__`` names the factory's module, where no
such name exists. Griffe's dynamic inspection then records them as aliases to that
module and cannot resolve them, and mkdocstrings leaves them out. This extension
replaces every unresolvable alias of a configured package by an inspection of the
runtime object itself: its real signature and docstring, as ``help()`` shows them.

It also drops the class attributes that only runtime inspection sees (``__doc__``,
``__module__``, ``__weakref__``, ``__dataclass_fields__`` …): reading the source never
shows them, and they are no part of the API.

Finally, bindf's docstrings cross-reference with Sphinx roles (``:func:`bindf.read```,
``:class:`~bindf.errors.HeaderError```), which Markdown would print literally. They
become optional autorefs: a link where the reference documents the target, plain code
otherwise (private helpers are not documented, and must not fail the build).
"""

from __future__ import annotations

import html
import importlib
import inspect
import re
from collections.abc import Iterator
from typing import Any

import griffe


class RuntimeMembers(griffe.Extension):
    """After a package is loaded: inspect the runtime functions griffe could only record as
    unresolvable aliases (in the modules named by ``packages``; all when empty), drop
    inspection-only class attributes, and turn Sphinx roles into optional autorefs."""

    def __init__(self, packages: list[str] | None = None) -> None:
        super().__init__()
        self.packages = list(packages or [])

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        for module in self._modules(pkg):
            if module.path in self.packages or not self.packages:
                self._replace_unresolvable_aliases(module, loader)
            for cls in module.classes.values():
                if not cls.is_alias:
                    _drop_runtime_dunder_attributes(cls)
        _rewrite_sphinx_roles(pkg, seen=set())

    def _modules(self, module: griffe.Module) -> Iterator[griffe.Module]:
        yield module
        for member in module.modules.values():
            if not member.is_alias:
                yield from self._modules(member)

    def _replace_unresolvable_aliases(self, module: griffe.Module, loader: griffe.GriffeLoader) -> None:
        runtime_module = importlib.import_module(module.path)
        inspector = griffe.Inspector(
            module.path, filepath=None, extensions=loader.extensions,
            docstring_parser=loader.docstring_parser, docstring_options=loader.docstring_options,
        )
        inspector.current = module
        module_node = griffe.ObjectNode(runtime_module, module.path)
        for name, member in list(module.members.items()):
            if not member.is_alias or _resolves(member):
                continue
            runtime_object = getattr(runtime_module, name, None)
            if not inspect.isfunction(runtime_object):
                continue
            # handle_function sets the inspected Function as module.<name>.
            inspector.inspect_function(griffe.ObjectNode(runtime_object, name, parent=module_node))
        # Public functions served by the module's __getattr__ (imported on first use, so
        # that importing the package stays light) are not module members at all.
        for name in getattr(runtime_module, "__all__", ()):
            if name in module.members:
                continue
            runtime_object = getattr(runtime_module, name, None)
            if inspect.isfunction(runtime_object):
                inspector.inspect_function(griffe.ObjectNode(runtime_object, name, parent=module_node))
        # Functions that only the module's __dir__ names (bindf.dask.read_<format>, one per
        # registered format) are inspected too; a page lists them with ``members:``.
        for name in dir(runtime_module):
            if name.startswith("_") or name in module.members:
                continue
            runtime_object = getattr(runtime_module, name, None)
            if inspect.isfunction(runtime_object):
                inspector.inspect_function(griffe.ObjectNode(runtime_object, name, parent=module_node))


#: ``:role:`target``` or ``:role:`~target``` (``~``: show only the last component).
_SPHINX_ROLE = re.compile(r":(?:py:)?(?:func|meth|class|exc|mod|data|attr|obj):`(~?)([\w.]+)(\(\))?`")


def _autoref(match: re.Match[str]) -> str:
    short, target, call = match.groups()
    shown = (target.rsplit(".", 1)[-1] if short else target.lstrip(".")) + (call or "")
    identifier = html.escape(target.lstrip("."), quote=True)
    return f'<autoref identifier="{identifier}" optional><code>{html.escape(shown)}</code></autoref>'


def _rewrite_sphinx_roles(obj: griffe.Object, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if obj.docstring is not None:
        obj.docstring.value = _SPHINX_ROLE.sub(_autoref, obj.docstring.value)
    for member in obj.members.values():
        if not member.is_alias:
            _rewrite_sphinx_roles(member, seen)


def _drop_runtime_dunder_attributes(cls: griffe.Class) -> None:
    for name, member in list(cls.members.items()):
        if not (name.startswith("__") and name.endswith("__")):
            continue
        # A runtime dunder that points nowhere griffe can follow (typing.Protocol gives
        # its classes ``__init__ = typing._no_init_or_replace_init``) goes too.
        if (member.is_alias and not _resolves(member)) or member.is_attribute:
            del cls.members[name]
    for inner in cls.classes.values():
        if not inner.is_alias:
            _drop_runtime_dunder_attributes(inner)


def _resolves(alias: griffe.Alias) -> bool:
    try:
        alias.resolve_target()
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False
    return True
