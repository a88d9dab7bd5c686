"""The one bridge between a tool's settings dataclass, TOML and the command line.

Every aits tool (``train``, ``simulate``, ``evaluate``) keeps its settings in a
dataclass derived from :class:`Settings`. Each field ``t_end`` is at once

* an attribute ``cfg.t_end``,
* a TOML key ``t_end``: top-level keys are *shared* (each tool takes those it has;
  a key no tool has is refused), the tool's own table (``[simulate]``) holds
  settings of that tool only and wins over the shared ones;
* a command-line option ``--t-end`` (underscores become hyphens), which wins over
  the file.

The field's metadata (:func:`setting`) gives its help text, its allowed values
(``choices``, ``ge``/``gt``/``le``/``lt``), its ``nargs`` and, for options of which
at most one may be given (``--t-end | --orbits | --steps``), the name of their
``exclusive`` group. :meth:`Settings.validate` checks all of that and then the
class's own cross-setting rules (:meth:`Settings.check`); an invalid value raises
:class:`ConfigError` naming the setting and what it must be.

Why not tyro or simple-parsing: both map dataclasses to argparse, neither reads
the TOML layering (shared keys plus a table per tool) or refuses a setting that
does not apply; this module is the one place that does, for every tool.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any, ClassVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

import tomli_w

__all__ = ["ConfigError", "Settings", "read_toml", "setting"]


class ConfigError(ValueError):
    """An invalid setting (the message names it and its allowed values)."""


def setting(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with its ``--help`` text and checks in the metadata.

    ``meta`` keys: ``choices`` (allowed values; for a list, of each item), ``ge``,
    ``gt``, ``le``, ``lt`` (bounds), ``finite`` (default ``True`` for numbers),
    ``nargs`` (a list's count on the command line, default ``"+"``), ``metavar``,
    ``exclusive`` (the group of which at most one setting may be given).
    """
    meta = {"help": help, **meta}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict.

    Raises:
        ConfigError: unreadable file, not UTF-8, or not valid TOML.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text; save it as UTF-8") \
            from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from None


# ------------------------------------------------------------------------------ types


def _base(hint: Any) -> tuple[Any, bool]:
    """``(hint without None, whether None is allowed)``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _item_type(hint: Any) -> Any:
    """The item type of ``list[X]``, else ``None``."""
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0]
    return None


_WORDS = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}
_PLURAL = {float: "numbers", int: "integers", str: "strings"}


def _is(v: Any, typ: type) -> bool:
    if typ is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if typ is int:
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, typ)


def _fail(name: str, allowed: str, value: Any) -> typing.NoReturn:
    raise ConfigError(f"setting {name!r} must be {allowed}, got {value!r}")


def _bounds(meta: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(op, meta[key]) for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
            if key in meta]


def _check_value(name: str, v: Any, typ: type, meta: Mapping[str, Any], whole: Any) -> Any:
    """``v`` checked against ``typ`` and the bounds/choices of ``meta`` (floats normalised)."""
    if not _is(v, typ):
        _fail(name, _WORDS.get(typ, f"a {typ.__name__}"), whole)
    if typ is float:
        v = float(v)
        if meta.get("finite", True) and not math.isfinite(v):
            _fail(name, "a finite number", whole)
        if math.isnan(v):
            _fail(name, "a number", whole)
    bounds = _bounds(meta)
    if bounds and not all({">=": v >= b, ">": v > b, "<=": v <= b, "<": v < b}[op]
                          for op, b in bounds):
        kind = "an integer" if typ is int else "a number"
        _fail(name, f"{kind} " + " and ".join(f"{op} {b:g}" for op, b in bounds), whole)
    choices = meta.get("choices")
    if choices is not None and v not in choices:
        _fail(name, "one of " + ", ".join(map(str, choices)), whole)
    return v


# --------------------------------------------------------------------------- the base


class Settings:
    """Base of a tool's settings dataclass (see the module docstring).

    Subclasses set :attr:`TABLE` (their TOML table and the tool's name) and
    override :meth:`check` for rules across settings (calling ``super().check()``).
    """

    TABLE: ClassVar[str] = ""
    #: every tool's settings class, by table (for the shared top-level keys)
    TOOLS: ClassVar[dict[str, type[Settings]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.__dict__.get("TABLE"):
            Settings.TOOLS[cls.TABLE] = cls

    # -- the fields ------------------------------------------------------------------

    @classmethod
    def field_map(cls) -> dict[str, dataclasses.Field]:
        """Name -> field, in declaration order."""
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def hints(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    @classmethod
    def exclusive_groups(cls) -> dict[str, list[str]]:
        """Group name -> the settings of which at most one may be given."""
        groups: dict[str, list[str]] = {}
        for name, f in cls.field_map().items():
            if "exclusive" in f.metadata:
                groups.setdefault(f.metadata["exclusive"], []).append(name)
        return groups

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists copied), in field order."""
        return {name: _copy(getattr(self, name)) for name in self.field_map()}

    def replace(self, **changes: Any):
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes).validate()

    # -- checks ----------------------------------------------------------------------

    def validate(self):
        """Check every setting (types, ranges, choices, then :meth:`check`); return
        ``self`` with floats normalised to ``float``.

        Raises:
            ConfigError: naming the first invalid setting and its allowed values.
        """
        hints = self.hints()
        for name, f in self.field_map().items():
            v = getattr(self, name)
            typ, optional = _base(hints[name])
            if v is None:
                if not optional:
                    _fail(name, _WORDS.get(typ, "a list"), v)
                continue
            item = _item_type(typ)
            if item is not None:
                if _is(v, item):  # one value where a list is asked for (TOML: tolerance = 1e-4)
                    v = [v]
                if not isinstance(v, list) or not v:
                    _fail(name, f"a non-empty list of {_PLURAL[item]}", v)
                v = [_check_value(name, x, item, f.metadata, v) for x in v]
            else:
                v = _check_value(name, v, typ, f.metadata, v)
            setattr(self, name, v)
        for group in self.exclusive_groups().values():
            given = [n for n in group if getattr(self, n) is not None]
            if len(given) > 1:
                raise ConfigError(f"settings {' and '.join(map(repr, given))} exclude each "
                                  "other; give one of them")
        self.check()
        return self

    def check(self) -> None:
        """Rules across settings (override; raise :class:`ConfigError`)."""

    def require_one(self, group: str) -> None:
        """Refuse a run that gives none of the ``exclusive`` group ``group``."""
        names = self.exclusive_groups()[group]
        if all(getattr(self, n) is None for n in names):
            raise ConfigError("give one of " + ", ".join("--" + n.replace("_", "-")
                                                         for n in names))

    def refuse_unless(self, name: str, applies: bool, why: str) -> None:
        """Refuse setting ``name`` (given: not its default) where it does not apply."""
        f = self.field_map()[name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if getattr(self, name) != default and not applies:
            raise ConfigError(f"setting {name!r} (--{name.replace('_', '-')}) does not apply "
                              f"{why}; leave it out")

    # -- TOML ------------------------------------------------------------------------

    @classmethod
    def load_toml(cls, path: str | Path) -> dict[str, Any]:
        """This tool's settings in a TOML file: the shared top-level keys it has, then
        its own table on top; other tools' tables are skipped.

        Raises:
            ConfigError: unreadable file, bad TOML, an unknown table, a top-level key
                no tool has, or a key of this tool's table it does not have.
        """
        data = read_toml(path)
        where = f"config file {str(path)!r}"
        for key, value in data.items():
            if isinstance(value, dict) and key not in Settings.TOOLS:
                raise ConfigError(f"{where}: unknown table [{key}]; valid tables: "
                                  + ", ".join(f"[{t}]" for t in Settings.TOOLS))
        shared = {k: v for k, v in data.items() if not isinstance(v, dict)}
        known = set().union(*(tool.field_map() for tool in Settings.TOOLS.values()))
        for key in shared:
            if key in Settings.TOOLS:
                raise ConfigError(f"{where}: {key!r} must be a table ([{key}])")
            if key not in known:
                raise ConfigError(f"{where}: unknown setting {key!r} at top level (no aits "
                                  "tool has it); run `python -m aits.<tool> --help` for the "
                                  "valid names")
        table = data.get(cls.TABLE, {})
        mine = cls.field_map()
        for key in table:
            if key not in mine:
                raise ConfigError(f"{where}: unknown setting {key!r} in [{cls.TABLE}]; run "
                                  f"`python -m aits.{cls.TABLE} --help` for the valid names")
        values = {k: v for k, v in shared.items() if k in mine}
        return _merge(cls, values, table)

    def dump_toml(self) -> str:
        """The settings as a TOML document (this tool's table; unset values left out),
        readable by :meth:`load_toml`."""
        return tomli_w.dumps({self.TABLE: {k: v for k, v in self.to_dict().items()
                                           if v is not None}})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: Settings | None = None):
        """A validated config: ``base`` (defaults when ``None``) with ``values`` applied."""
        unknown = set(values) - set(cls.field_map())
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        base = base if base is not None else cls()
        return dataclasses.replace(base, **{k: _copy(v) for k, v in values.items()}).validate()

    @classmethod
    def resolve(cls, config_file: str | Path | None, cli_values: Mapping[str, Any]):
        """Defaults, then ``config_file`` (if any), then the command-line values (a
        command-line member of an exclusive group replaces the file's)."""
        values = cls.load_toml(config_file) if config_file else {}
        return cls.from_mapping(_merge(cls, values, cli_values))

    # -- the command line ------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One option per field (``--t-end``), grouped as the fields' ``section``
        metadata says; defaults are *not* set on the parser (``argparse.SUPPRESS``)
        so that only given options override the file."""
        hints = cls.hints()
        sections: dict[str, argparse._ArgumentGroup] = {}
        exclusive: dict[str, argparse._MutuallyExclusiveGroup] = {}
        for name, f in cls.field_map().items():
            title = f.metadata.get("section", "settings (also TOML keys, underscores kept)")
            where = sections.get(title) or sections.setdefault(
                title, parser.add_argument_group(title))
            if "exclusive" in f.metadata:
                key = f.metadata["exclusive"]
                where = exclusive.get(key) or exclusive.setdefault(
                    key, where.add_mutually_exclusive_group())
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            shown = "" if default is None else f" (default: {_shown(default)})"
            kw: dict[str, Any] = dict(default=argparse.SUPPRESS, dest=name,
                                      help=f.metadata["help"] + shown)
            typ, _ = _base(hints[name])
            item = _item_type(typ)
            choices = f.metadata.get("choices")
            if typ is bool:
                kw["action"] = argparse.BooleanOptionalAction
            elif item is not None:
                kw.update(type=item, nargs=f.metadata.get("nargs", "+"), choices=choices)
                if choices is None:
                    kw["metavar"] = f.metadata.get("metavar", item.__name__.upper())
            elif choices is not None:  # argparse shows them and refuses others
                kw.update(type=typ, choices=choices)
            else:
                kw.update(type=typ, metavar=f.metadata.get("metavar", typ.__name__.upper()))
            where.add_argument("--" + name.replace("_", "-"), **kw)

    @classmethod
    def build_parser(cls, **kw: Any) -> argparse.ArgumentParser:
        """An argument parser with ``--config FILE`` and one option per setting."""
        parser = argparse.ArgumentParser(**kw)
        parser.add_argument("--config", metavar="FILE",
                            help=f"TOML file: its shared top-level keys and its [{cls.TABLE}] "
                                 "table set options by their names (underscores kept); the "
                                 "command line overrides it")
        cls.add_arguments(parser)
        return parser

    @classmethod
    def from_command_line(cls, parser: argparse.ArgumentParser,
                          argv: Sequence[str] | None = None):
        """The validated settings of ``argv`` (and its ``--config FILE``); an invalid
        one ends in ``parser.error`` (exit status 2)."""
        args = vars(parser.parse_args(argv))
        config_file = args.pop("config", None)
        try:
            return cls.resolve(config_file, args)
        except ConfigError as e:
            parser.error(str(e))


def _copy(v: Any) -> Any:
    return list(v) if isinstance(v, list) else v


def _shown(v: Any) -> str:
    if isinstance(v, list):
        return " ".join(map(str, v))
    return str(v)


def _merge(cls: type[Settings], below: Mapping[str, Any], above: Mapping[str, Any]) -> dict:
    """``below`` with ``above`` on top; a member of an exclusive group in ``above``
    removes the group's members from ``below``."""
    merged = dict(below)
    for group in cls.exclusive_groups().values():
        if any(n in above for n in group):
            for n in group:
                merged.pop(n, None)
    merged.update(above)
    return merged
