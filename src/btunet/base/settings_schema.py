"""One schema for every setting: each config field declares its type, range and choices once
(pydantic ``Field(ge=..., gt=..., le=..., lt=...)`` and ``Literal[...]``), and the configs, the
command line and the widgets all read them from there.

``limits(PretrainConfig, "lr")`` gives a field's declared range or choices and its default: the
CLI checks its options and writes its help with it, the widgets set their spin boxes and combo
boxes from it. A refused value is a ``BTUnetError`` of one line naming the setting, in the same
words as the checks of single settings (``fields``), e.g. "lr must be a finite number above 0
and at most 1, got 0".
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from typing import Annotated, Any, Literal

import pydantic.dataclasses
from pydantic import BeforeValidator, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from . import fields
from .errors import BTUnetError


def _whole_number(value: Any) -> Any:
    """numpy integers pass as ints; bools and floats never pass as whole numbers (1.0, True)."""
    if isinstance(value, bool) or (isinstance(value, numbers.Number) and not isinstance(value, numbers.Integral)):
        raise ValueError("not a whole number")
    return int(value) if isinstance(value, numbers.Integral) else value


def _real_number(value: Any) -> Any:
    """numpy floats and ints pass as floats; a bool does not (the strict float refuses it)."""
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else value


def _list(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


#: a whole number (never a bool or a float), a finite real number (never a bool), a list
Whole = Annotated[int, BeforeValidator(_whole_number)]
Number = Annotated[float, BeforeValidator(_real_number)]
List = Annotated[list, BeforeValidator(_list)]


def whole_choice(*allowed: int) -> Any:
    """A whole number from ``allowed`` (``Literal`` alone would take True for 1)."""
    return Annotated[Literal[allowed], BeforeValidator(_whole_number)]


#: how every config validates: no coercion of strings or bools, no NaN or infinity
STRICT = ConfigDict(strict=True, allow_inf_nan=False)


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one setting accepts, as declared in its config: read by the CLI and the widgets."""
    name: str
    kind: str                 # "whole", "number", "flag", "text", "choice" or "list"
    default: Any
    lo: float | None = None   # bounds of a whole number or number (None: unbounded)
    hi: float | None = None
    lo_open: bool = False     # the bound itself is refused
    hi_open: bool = False
    choices: tuple = ()       # the values of a choice
    optional: bool = False    # None is accepted
    words: str | None = None  # what a value must be, where kind and range do not say it

    def check(self, value: Any) -> None:
        """Raise the setting's one-line ``BTUnetError`` unless ``value`` is accepted."""
        if value is None and self.optional:
            return
        name = self.name
        if self.kind == "whole":
            lo = -math.inf if self.lo is None else self.lo + (1 if self.lo_open else 0)
            hi = None if self.hi is None else self.hi - (1 if self.hi_open else 0)
            fields.whole(name, value, lo, hi)
        elif self.kind == "number":
            fields.number(name, value, -math.inf if self.lo is None else self.lo, self.hi,
                          lo_open=self.lo_open, hi_open=self.hi_open)
        elif self.kind == "choice" and all(isinstance(c, str) for c in self.choices):
            fields.choice(name, value, self.choices)
        elif self.kind == "choice":
            fields.whole_in(name, value, self.choices, self.words or f"one of {', '.join(map(str, self.choices))}")
        elif self.kind == "flag":
            fields.flag(name, value)
        elif self.kind == "text":
            fields.text(name, value)
        elif not isinstance(value, list):
            raise BTUnetError(f"{name} must be {self.words or 'a list'}, got {value!r}")

    def __contains__(self, value: Any) -> bool:
        try:
            self.check(value)
        except BTUnetError:
            return False
        return True

    def bounds_text(self) -> str:
        """The range in a few characters for help texts: '0-2', '>= 1', '> 0 and <= 1'."""
        lo, hi = shown(self.lo), shown(self.hi)
        if self.hi is not None and not (self.lo_open or self.hi_open):
            return f"{lo}-{hi}"
        low = f"{'>' if self.lo_open else '>='} {lo}"
        return low if self.hi is None else f"{low} and {'<' if self.hi_open else '<='} {hi}"


def shown(value: Any) -> str:
    """A bound as a user reads it: whole numbers in full, other numbers short (1e-05, 0.999)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _strip(annotation: Any) -> tuple[Any, list, bool]:
    """(bare type, constraint metadata, whether None is allowed) of an annotation."""
    metadata, optional = [], False
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = typing.get_args(annotation)
            metadata += extra
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = optional or len(options) < len(typing.get_args(annotation))
            if len(options) != 1:
                return annotation, metadata, optional
            annotation = options[0]
        else:
            return annotation, metadata, optional


@functools.cache
def limits(config: type, name: str) -> Limits:
    """The declared range, choices and default of the setting ``name`` of ``config``."""
    try:
        info = config.__pydantic_fields__[name]
    except KeyError:
        raise KeyError(f"{config.__name__} has no setting {name!r}") from None
    bare, metadata, optional = _strip(info.annotation)
    metadata = [*metadata, *info.metadata]
    metadata += [m for item in metadata if isinstance(item, FieldInfo) for m in item.metadata]
    bounds: dict[str, Any] = {}
    for item in metadata:
        for key, side, is_open in (("ge", "lo", False), ("gt", "lo", True), ("le", "hi", False), ("lt", "hi", True)):
            if not isinstance(item, FieldInfo) and getattr(item, key, None) is not None:  # annotated_types.Ge, ...
                bounds[side], bounds[f"{side}_open"] = getattr(item, key), is_open
    if typing.get_origin(bare) is Literal:
        kind, bounds["choices"] = "choice", typing.get_args(bare)
    else:
        kind = {int: "whole", float: "number", bool: "flag", str: "text"}.get(bare, "list")
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return Limits(name, kind, info.get_default(call_default_factory=True), optional=optional,
                  words=extra.get("words"), **bounds)


def names(config: type) -> list[str]:
    """The settings of ``config``, in their declared order."""
    return [f.name for f in dataclasses.fields(config)]


def settings(cls: type) -> type:
    """Make ``cls`` a validated config: a pydantic dataclass whose refused values are one-line
    ``BTUnetError``s naming the setting. ``cls._check_together()``, if it has one, checks what
    depends on several settings, after each one was checked alone.

    Assignment is not validated (a job may change a field, then ``check()`` runs before it
    starts): ``check()`` validates the current values again, as a construction does.
    """
    cls = pydantic.dataclasses.dataclass(cls, config=STRICT)
    validate = cls.__init__
    order = names(cls)

    @functools.wraps(validate)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            validate(self, *args, **kwargs)
        except ValidationError as exc:
            raise _one_line(cls, exc, {**dict(zip(order, args, strict=False)), **kwargs}) from None
        together = getattr(self, "_check_together", None)
        if together is not None:
            together()

    def check(self) -> None:
        """Refuse any setting that is out of range or of the wrong type (BTUnetError naming it)."""
        type(self)(**{name: getattr(self, name) for name in order})

    cls.__init__ = __init__
    cls.check = check
    return cls


def _one_line(config: type, exc: ValidationError, given: dict[str, Any]) -> BTUnetError:
    """The first refused setting of ``exc`` in the words of ``fields``."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else ""
    if name not in config.__pydantic_fields__:
        return BTUnetError(" ".join(str(exc).split()))
    value = given.get(name, error.get("input"))
    lim = limits(config, name)
    try:
        lim.check(value)
    except BTUnetError as refused:
        return refused
    return BTUnetError(f"{name} must be {lim.words or lim.kind}, got {value!r}")


__all__ = ["Limits", "List", "Number", "STRICT", "Whole", "limits", "names", "settings", "shown", "whole_choice"]
