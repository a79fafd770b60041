"""Config machinery: frozen dataclasses that validate themselves, read from and written to dicts.

Each part of jaxcnn defines the options it consumes as a frozen dataclass beside its code
(`ModelConfig` in `jaxcnn.models`, `DataConfig` in `jaxcnn.data`, `OptimConfig` and
`LoopConfig` in `jaxcnn.train`); `jaxcnn.RunConfig` composes them. A field is declared once,
with `option(default, help, ...)`, and that one declaration gives the default, the validation,
the command-line flag (`jaxcnn.cli.options` generates the parser) and the key in config files.

    config = RunConfig.from_dict(merge(load_file("recipe.yaml"), {"optim": {"lr": 0.1}}))

Deliberately small and dependency-free (json + PyYAML), so that importing a section's config
costs nothing and the same dicts serve `config.json`, `--config FILE` and Python users.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
import pathlib
import types
import typing
from typing import Any, Iterable, Iterator, Sequence

from jaxcnn.errors import UserError


class ConfigError(UserError, ValueError):
    """A config value is invalid: `option` is its dotted path (e.g. `optim.lr`), `reason` says why."""

    def __init__(self, option: str, reason: str):
        super().__init__(f"{option}: {reason}")
        self.option = option
        self.reason = reason


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None,
           choices: Sequence[str] | None = None, resume: bool = False, metavar: str | None = None,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A config field with its help text; `flag` overrides the generated `--field-name`, `resume`
    marks what may change when a run is resumed, `choices` lists valid values for the help."""
    metadata = {"help": help, "flag": flag, "choices": choices, "resume": resume, "metavar": metavar}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# ---------------------------------------------------------------------------------------------
# Checks used by the sections' __post_init__. Each raises ConfigError naming the field.

def check_int(name: str, value, *, minimum: int | None = None, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(name, f"must be >= {minimum}, got {value}")


AUTO = "auto"


def check_int_or_auto(name: str, value, *, minimum: int | None = None) -> None:
    """An integer (>= `minimum`) or the string "auto" (jaxcnn chooses; see the option's help)."""
    if value != AUTO:
        check_int(name, value, minimum=minimum)


def int_or_auto(text: str) -> int | str:
    """Command-line reader of an `int | str` option: "auto" or an integer (kept as text otherwise,
    so the option's check names it)."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return text


def check_float(name: str, value, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, optional: bool = False) -> None:
    """A finite number in [low, high] (`*_open`: excluding that end)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(name, f"must be a finite number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "" if low is None else f"{'(' if low_open else '['}{low}"
        hi = "" if high is None else f"{high}{')' if high_open else ']'}"
        where = f"in {lo}, {hi}" if low is not None and high is not None else (
            f"{'>' if low_open else '>='} {low}" if low is not None else f"{'<' if high_open else '<='} {high}")
        raise ConfigError(name, f"must be {where}, got {value}")


def check_choice(name: str, value, valid: Iterable[str], *, optional: bool = False) -> None:
    valid = list(valid)
    if value is None and optional:
        return
    if value not in valid:
        close = difflib.get_close_matches(str(value), valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(name, f"unknown value {value!r}.{hint} Valid: {', '.join(map(str, valid))}")


@contextlib.contextmanager
def reraise_as(name: str):
    """A ValueError raised by a library check inside the block becomes a ConfigError naming `name`."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(name, str(error)) from error


# ---------------------------------------------------------------------------------------------
# dicts <-> dataclasses

def field_type(cls, field: dataclasses.Field):
    return typing.get_type_hints(cls)[field.name]


def unwrap_optional(tp):
    """`X | None` -> X (None where the annotation is not optional)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else None
    return tp


def is_section(tp) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


def from_dict(cls, values: dict, path: str = ""):
    """Build dataclass `cls` from a (possibly partial) nested dict; missing keys keep their
    defaults, unknown keys are a ConfigError with the closest valid name."""
    if not isinstance(values, dict):
        raise ConfigError(path or "config", f"expected a mapping of options, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    # a key spelled as the field's flag (`lr` for learning_rate) is suggested by that name
    by_flag = {f.metadata["flag"].strip("-").replace("-", "_"): name
               for name, f in fields.items() if f.metadata.get("flag")}
    for key in values:
        if key not in fields:
            close = [by_flag[key]] if key in by_flag else difflib.get_close_matches(str(key), fields, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{path}{key}", f"unknown option.{hint} Valid: {', '.join(fields)}")
    kwargs = {}
    for name, value in values.items():
        declared = field_type(cls, fields[name])
        tp = unwrap_optional(declared) or object
        if not (value is None and tp is not declared):
            _check_scalar_type(f"{path}{name}", tp, value)
        if is_section(tp):
            value = from_dict(tp, value or {}, f"{path}{name}.")
        elif typing.get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(value)
        elif tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as error:
        if path and not error.option.startswith(path):
            raise ConfigError(path + error.option, error.reason) from None
        raise


_SCALAR_TYPES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _check_scalar_type(name: str, tp, value) -> None:
    """A ConfigError unless `value` has the declared scalar type `tp` (a string such as "false"
    is not a boolean: it would be truthy). Other types are checked by their section."""
    if tp not in _SCALAR_TYPES:
        return
    ok = (isinstance(value, bool) if tp is bool else
          isinstance(value, str) if tp is str else
          isinstance(value, (int, float) if tp is float else int) and not isinstance(value, bool))
    if not ok:
        raise ConfigError(name, f"must be {_SCALAR_TYPES[tp]}, got {value!r} ({type(value).__name__})")


def to_dict(config) -> dict:
    """The nested dict of a config (tuples as lists), as written to `config.json`."""
    def plain(value):
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def merge(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` on top, nested dicts merged key by key (neither is modified)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def flatten(values: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every option of a nested config dict (a model's `options`
    mapping is one option)."""
    for key, value in values.items():
        if isinstance(value, dict) and key != "options":
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


def nest(path: str, value) -> dict:
    """{"a": {"b": value}} for "a.b"."""
    head, _, rest = path.partition(".")
    return {head: nest(rest, value) if rest else value}


def differences(config: dict, reference: dict) -> list[tuple[str, Any, Any]]:
    """(path, value, reference value) of each option whose value differs."""
    ref = dict(flatten(reference))
    return [(path, value, ref.get(path)) for path, value in flatten(config) if ref.get(path) != value]


# ---------------------------------------------------------------------------------------------
# files

def load_file(path) -> dict:
    """A config file as a nested dict: JSON (`.json`) or YAML (anything else).

    A run folder's `config.json` ({"config": ..., "environment": ...}) is accepted as it is,
    so a finished run's config starts a new one: in a new run folder, since its recorded `out`
    (the folder of the run it came from) is left out; give `out` (--out) to choose one.
    """
    path = pathlib.Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError("config", f"cannot read {path}: {error.strerror or error}") from None
    if path.suffix == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError("config", f"{path} is not valid JSON: {error}") from None
    else:
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError("config", f"{path} is not valid YAML: {error}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError("config", f"{path} must hold a mapping of options, not {type(values).__name__}")
    if "config" in values and isinstance(values["config"], dict):
        values = {name: value for name, value in values["config"].items() if name != "out"}
    return values


def dump_yaml(values: dict, header: Sequence[str] = ()) -> str:
    """YAML text of a nested config dict, optionally preceded by `# ...` comment lines."""
    import yaml

    comments = "".join(f"# {line}\n" for line in header)
    return comments + yaml.safe_dump(values, sort_keys=False, default_flow_style=False)
