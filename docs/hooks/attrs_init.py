"""A griffe extension for the API reference: the ``__init__`` of attrs classes.

Griffe reads source, not runtime objects, so an ``@attrs.frozen`` or
``@attrs.define`` class has no ``__init__`` to show: the reference would give
``Record`` and ``ProcessorConfig`` without a signature. This extension builds that
signature from the class body, as attrs does: annotated class attributes in order
(``ClassVar`` excluded), defaults from ``= value``, ``attrs.field(default=...)``
or ``factory=``, ``init=False`` fields left out, ``kw_only`` from the decorator or
the field, a leading underscore stripped from the parameter name (or ``alias=``).
Base attrs classes' fields come first, as attrs orders them.

Loaded by mkdocstrings from ``mkdocs.yml`` (``extensions:``); nothing here is part
of the package.
"""

from __future__ import annotations

from typing import Any

import griffe

DECORATORS = frozenset(
    {
        "attrs.define",
        "attrs.frozen",
        "attrs.mutable",
        "attr.s",
        "attr.attrs",
        "attr.define",
        "attr.frozen",
        "attr.mutable",
    }
)
FIELD_CALLS = frozenset({"attrs.field", "attr.ib", "attr.attrib", "attr.field"})


def _keywords(call: griffe.ExprCall) -> dict[str, str | griffe.Expr]:
    return {
        argument.name: argument.value
        for argument in call.arguments
        if isinstance(argument, griffe.ExprKeyword)
    }


def _attrs_decorator(cls: griffe.Class) -> dict[str, str | griffe.Expr] | None:
    """The decorator's keyword arguments when ``cls`` is an attrs class, else None."""
    for decorator in cls.decorators:
        value = decorator.value
        call = value if isinstance(value, griffe.ExprCall) else None
        target = call.function if call is not None else value
        path = target.canonical_path if isinstance(target, griffe.Expr) else str(target)
        if path in DECORATORS:
            return _keywords(call) if call is not None else {}
    return None


def _is_true(value: str | griffe.Expr | None) -> bool:
    return str(value) == "True"


def _fields(cls: griffe.Class, class_kw_only: bool) -> list[griffe.Parameter]:
    parameters = []
    for member in cls.members.values():
        if member.is_alias or not member.is_attribute:
            continue
        attribute: griffe.Attribute = member  # type: ignore[assignment]
        if attribute.annotation is None or "property" in attribute.labels:
            continue
        if "class-attribute" in attribute.labels and "instance-attribute" not in attribute.labels:
            # griffe unwraps ClassVar[...] and labels it a class attribute only
            annotation = str(attribute.annotation)
            if "ClassVar" in annotation or attribute.value is None:
                continue
        value = attribute.value
        field: dict[str, str | griffe.Expr] = {}
        if isinstance(value, griffe.ExprCall) and value.function.canonical_path in FIELD_CALLS:
            field = _keywords(value)
        if str(field.get("init", "True")) == "False":
            continue
        if "factory" in field:
            default: str | griffe.Expr | None = f"{field['factory']}()"
        elif "default" in field:
            default = field["default"]
        elif field:
            default = None
        else:
            default = value
        name = str(field["alias"]).strip("'\"") if "alias" in field else attribute.name.lstrip("_")
        kind = (
            griffe.ParameterKind.keyword_only
            if class_kw_only or _is_true(field.get("kw_only"))
            else griffe.ParameterKind.positional_or_keyword
        )
        parameters.append(
            griffe.Parameter(
                name,
                annotation=attribute.annotation,
                kind=kind,
                default=default,
                docstring=attribute.docstring,
            )
        )
    return parameters


def attrs_parameters(cls: griffe.Class) -> list[griffe.Parameter] | None:
    """The ``__init__`` parameters attrs generates for ``cls``; None if not attrs."""
    options = _attrs_decorator(cls)
    if options is None or str(options.get("init", "True")) == "False":
        return None
    try:
        mro = cls.mro()
    except ValueError:
        mro = []
    by_name: dict[str, griffe.Parameter] = {}
    for base in [*reversed(mro), cls]:
        base_options = _attrs_decorator(base)
        if base_options is None:
            continue
        for parameter in _fields(base, _is_true(base_options.get("kw_only"))):
            by_name.pop(parameter.name, None)
            by_name[parameter.name] = parameter
    positional = [p for p in by_name.values() if p.kind is not griffe.ParameterKind.keyword_only]
    keyword = [p for p in by_name.values() if p.kind is griffe.ParameterKind.keyword_only]
    return positional + keyword


def _classes(obj: griffe.Object) -> list[griffe.Class]:
    found = []
    for member in obj.members.values():
        if member.is_alias:
            continue
        if member.is_class:
            found.append(member)
        if member.is_class or member.is_module:
            found.extend(_classes(member))  # type: ignore[arg-type]
    return found  # type: ignore[return-value]


class AttrsInit(griffe.Extension):
    """Gives every attrs class of a loaded package the ``__init__`` attrs generates."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for cls in _classes(pkg):
            if "__init__" in cls.members:
                continue
            parameters = attrs_parameters(cls)
            if parameters is None:
                continue
            self_parameter = griffe.Parameter(
                "self", kind=griffe.ParameterKind.positional_or_keyword
            )
            cls.set_member(
                "__init__",
                griffe.Function(
                    "__init__",
                    lineno=cls.lineno,
                    endlineno=cls.lineno,
                    parent=cls,
                    parameters=griffe.Parameters(self_parameter, *parameters),
                    returns="None",
                ),
            )
