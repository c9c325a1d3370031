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

An attribute inspected at runtime has no docstring of its own, so griffe gives it its
value's type's (``str``, ``int``, ``bool``: "Create a new string object …"). The
extension gives it the ``#:`` comment above its assignment in the source instead, as a
static reading would, or no docstring when there is none.

Finally, bindf's docstrings cross-reference with Sphinx roles (``:func:`bindf.read```,
``:class:`~bindf.errors.HeaderError```), which Markdown would print literally. They
become optional autorefs: a link where the reference documents the target, plain code
otherwise (private helpers are not documented, and must not fail the build).
"""

from __future__ import annotations

import ast
import html
import importlib
import inspect
import re
import sys
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
        _attribute_comments_for_type_docstrings(pkg, seen=set())
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


def _attribute_comments_for_type_docstrings(obj: griffe.Object, seen: set[str]) -> None:
    """Give each attribute whose docstring is its value's type's the ``#:`` comment above
    it in the source (see the module docstring), recursively."""
    if obj.path in seen:
        return
    seen.add(obj.path)
    for name, member in list(obj.members.items()):
        if member.is_alias:
            continue
        if member.is_attribute and member.docstring is not None:
            value = _runtime_value(obj, name)
            if member.docstring.value == inspect.getdoc(type(value)):
                comment = _source_comment(obj, name)
                if comment:
                    member.docstring.value = comment
                else:
                    member.docstring = None
        elif member.is_module or member.is_class:
            _attribute_comments_for_type_docstrings(member, seen)


def _runtime_object(obj: griffe.Object) -> Any:
    """The runtime module or class a griffe module or class stands for."""
    if obj.is_module:
        return importlib.import_module(obj.path)
    runtime = _runtime_object(obj.parent) if obj.parent is not None else None
    return getattr(runtime, obj.name, None)


def _runtime_value(owner: griffe.Object, name: str) -> Any:
    """The attribute's runtime value (a dataclass field's default for a class)."""
    return getattr(_runtime_object(owner), name, None)


def _source_comment(owner: griffe.Object, name: str) -> str | None:
    """The ``#:`` lines right above ``name``'s assignment in the runtime owner's source:
    a class body, or a module (followed through ``from .x import name``)."""
    return _comment_in(_runtime_object(owner), name)


def _comment_in(runtime: Any, name: str) -> str | None:
    module = sys.modules.get(getattr(runtime, "__module__", None) or "") if inspect.isclass(
        runtime) else runtime
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return None
    tree = ast.parse(source)
    body = tree.body
    if inspect.isclass(runtime):
        body = next((node.body for node in ast.walk(tree)
                     if isinstance(node, ast.ClassDef) and node.name == runtime.__name__), [])
    lines = source.splitlines()
    for node in _statements(body):
        if isinstance(node, ast.ImportFrom) and any(a.name == name and a.asname is None
                                                    for a in node.names):
            package = module.__name__ if hasattr(module, "__path__") else module.__package__
            source_module = importlib.import_module("." * node.level + (node.module or ""),
                                                    package)
            return _comment_in(source_module, name)
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            comment: list[str] = []
            line = node.lineno - 2  # (0-based: the line above the assignment)
            while line >= 0 and lines[line].strip().startswith("#:"):
                comment.insert(0, lines[line].strip()[2:].strip())
                line -= 1
            return " ".join(comment) or None
    return None


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of a module or class body, and those of its ``try``/``if`` blocks
    (``try: __version__ = version(...)``), not those of its functions or classes."""
    for node in body:
        yield node
        if isinstance(node, (ast.Try, ast.If)):
            for block in (node.body, node.orelse, getattr(node, "finalbody", [])):
                yield from _statements(block)
            for handler in getattr(node, "handlers", []):
                yield from _statements(handler.body)


def _resolves(alias: griffe.Alias) -> bool:
    try:
        alias.resolve_target()
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False
    return True
