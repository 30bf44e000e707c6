"""A griffe extension for the API reference: Sphinx roles become cross-references.

The docstrings are written with Sphinx roles (":meth:`assign`",
":class:`~offsetledger.core.ConfigError`"); mkdocstrings renders Markdown and would
print them raw. Once the package is loaded, this extension rewrites every role in
every docstring into an autorefs cross-reference: the target is resolved in the
scope of the object the docstring belongs to (its members, its class, its module,
what the module imports), as Sphinx would. A target that is not on the site (the
standard library, a private helper) is an *optional* reference: it renders as
code, without a link and without a warning.

Loaded by mkdocstrings from ``mkdocs.yml`` (``extensions:``); nothing here is part
of the package.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(
    r":(?:py:)?(?P<role>meth|class|func|attr|mod|data|exc|obj|const|type):"
    r"`(?P<body>[^`]+)`"
)
_EXPLICIT = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")
_CALLABLE_ROLES = frozenset({"meth", "func"})


def resolve(obj: griffe.Object, target: str) -> str | None:
    """The full path of ``target`` seen from ``obj``, or None when it is unknown."""
    target = target.lstrip(".")
    head, _, rest = target.partition(".")
    package = obj.package.name
    if head == package:
        return target
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            path = scope.resolve(head)
        except (griffe.NameResolutionError, griffe.AliasResolutionError):
            scope = scope.parent
            continue
        return f"{path}.{rest}" if rest else path
    return None


def rewrite(text: str, obj: griffe.Object) -> str:
    """``text`` with each Sphinx role replaced by an optional autorefs reference."""

    def replace(match: re.Match[str]) -> str:
        role, body = match["role"], match["body"].strip()
        explicit = _EXPLICIT.match(body)
        if explicit:
            title, target = explicit["title"], explicit["target"].strip()
        else:
            target = body.removeprefix("~")
            title = target.rsplit(".", 1)[-1] if body.startswith("~") else target
            if role in _CALLABLE_ROLES:
                title += "()"
        code = f"<code>{html.escape(title)}</code>"
        path = resolve(obj, target.removeprefix("~"))
        if path is None:
            return code
        return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'

    return ROLE.sub(replace, text)


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            found.extend(_walk(member))  # type: ignore[arg-type]
    return found


class SphinxRoles(griffe.Extension):
    """Rewrites Sphinx roles in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = rewrite(obj.docstring.value, obj)
