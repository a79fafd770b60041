"""Command-line flags generated from the config dataclasses: one declaration per option.

Each field of `RunConfig`'s sections becomes a flag: `--field-name` (or the `flag` its `option()`
names), typed from the annotation, with the field's help and default. Nested sections add no
prefix unless their `option()` names one (`optim.plateau` -> `--plateau-*`). Parsed flags come
back as a nested dict of only the options given, so they can be laid over defaults, a
`--config` file or a recorded run.

Why not tyro / jsonargparse / ml_collections: jaxcnn keeps the tutorials' flat flag spellings
(`--arch --lr --batch-size`) over nested sections, lays flags over a file or a recorded run
(`--resume` accepts only some), and translates library errors back to flags; the table below is
all of that in one place and needs no second dependency.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import typing
from typing import Any, Iterator, NoReturn

from jaxcnn.config import field_type, int_or_auto, is_section, merge, nest, unwrap_optional


class Parser(argparse.ArgumentParser):
    """The parser of every jaxcnn command: a mistake is a few lines on stderr and exit 2, not the
    whole usage (~40 lines for `jaxcnn train`). An unknown flag gets the closest known one:

        error: unrecognized argument --batchsize; did you mean --batch-size?
        `jaxcnn train --help` lists the options
    """

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            given = [extra.split("=", 1)[0] for extra in extras if extra.startswith("-")] or extras
            hints = [self._closest(flag) for flag in given]
            if len(given) == 1:
                self.error(f"unrecognized argument {given[0]}" + (f"; did you mean {hints[0]}?" if hints[0] else ""))
            self.error("unrecognized arguments " + ", ".join(
                flag + (f" (did you mean {hint}?)" if hint else "") for flag, hint in zip(given, hints)))
        return parsed

    def _closest(self, given: str) -> str | None:
        """The flag of this parser closest to `given`, if one is close (difflib's ratio >= 0.7)."""
        if not given.startswith("-"):
            return None
        known = [flag for action in self._actions if action.help != argparse.SUPPRESS
                 for flag in action.option_strings]
        close = difflib.get_close_matches(given, known, n=1, cutoff=0.7)  # 0.6 offers --out for --foo
        return close[0] if close else None

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n`{self.prog} --help` lists the options\n")


@dataclasses.dataclass(frozen=True)
class Flag:
    """One command-line flag and the config option (dotted `path`) it sets."""

    path: str
    flag: str
    field: dataclasses.Field
    type: Any

    @property
    def dest(self) -> str:
        return self.path.replace(".", "__")

    @property
    def resumable(self) -> bool:
        return bool(self.field.metadata.get("resume"))


def flags(cls, prefix: str = "--", path: str = "") -> Iterator[Flag]:
    """Every flag of config class `cls`, depth first."""
    for field in dataclasses.fields(cls):
        annotation = field_type(cls, field)
        tp = unwrap_optional(annotation) or (int_or_auto if set(typing.get_args(annotation)) == {int, str} else str)
        meta_flag = field.metadata.get("flag")
        if is_section(tp):
            yield from flags(tp, meta_flag or prefix, f"{path}{field.name}.")
        else:
            name = meta_flag if meta_flag and not meta_flag.endswith("-") else f"{prefix}{field.name.replace('_', '-')}"
            yield Flag(f"{path}{field.name}", name, field, tp)


def flag_names(cls) -> dict[str, str]:
    """Dotted option path -> flag, for translating library messages to the command line."""
    return {f.path: f.flag for f in flags(cls)}


def key_value(text: str) -> tuple[str, object]:
    """`KEY=VALUE`, the value read as a Python literal when it is one (`aux_logits=False`, `head=classic`)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _help(flag: Flag, default: Any) -> str:
    text = flag.field.metadata.get("help", "")
    choices = flag.field.metadata.get("choices")
    if choices:
        text += f" ({', '.join(map(str, choices))})"
    if default not in (None, False, (), {}) and not isinstance(default, dict):
        text += f" [default: {', '.join(map(str, default)) if isinstance(default, tuple) else default}]"
    return text.replace("%", "%%")  # argparse formats help strings with %


def add_flags(parser: argparse.ArgumentParser, cls, defaults: dict[str, Any]) -> list[Flag]:
    """Add a flag per option of `cls` to `parser`, in one argument group per section.

    Flags default to `argparse.SUPPRESS`, so the parsed namespace holds only what was given;
    `defaults` (dotted path -> value) is only shown in the help.
    """
    table = list(flags(cls))
    groups: dict[str, argparse._ArgumentGroup] = {}
    for flag in table:
        section = flag.path.split(".")[0] if "." in flag.path else "run"
        group = groups.setdefault(section, parser.add_argument_group(f"{section} options"))
        kwargs = dict(dest=flag.dest, default=argparse.SUPPRESS, help=_help(flag, defaults.get(flag.path)))
        if flag.type is not bool:
            kwargs["metavar"] = flag.field.metadata.get("metavar") or flag.flag.lstrip("-").replace("-", "_").upper()
        if flag.type is bool:
            group.add_argument(flag.flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(flag.type) is dict:
            group.add_argument(flag.flag, type=key_value, action="append", **kwargs)
        elif typing.get_origin(flag.type) is tuple:
            group.add_argument(flag.flag, type=int_list, **kwargs)
        else:
            group.add_argument(flag.flag, type=flag.type, **kwargs)
    return table


def given_options(namespace: argparse.Namespace, table: list[Flag]) -> dict[str, Any]:
    """The options set on the command line, as dotted path -> value."""
    values = {}
    for flag in table:
        if hasattr(namespace, flag.dest):
            value = getattr(namespace, flag.dest)
            values[flag.path] = dict(value) if typing.get_origin(flag.type) is dict else value
    return values


def as_nested(options: dict[str, Any]) -> dict:
    """{"a.b": 1, "a.c": 2} -> {"a": {"b": 1, "c": 2}}."""
    nested: dict = {}
    for path, value in options.items():
        nested = merge(nested, nest(path, value))
    return nested
