"""Settings declared once: a dataclass field made with `setting(...)` carries its default, help, choices and valid
range, and the command line (add_arguments), the up-front checks (number_rules) and what a run records are
generated from the dataclass.

Every field's dataclass default is None, "not given": a command line leaves what the user did not type at None,
the class's __post_init__ fills it (resolve_unset), so a recipe can fill exactly what was left unset and an
explicit value always wins. The declared default is in the field's metadata.

Adding a setting is one field, e.g. in models.ModelConfig:

    hyp_margin: float = setting(0.1, "contrastive margin", valid=at_least(0), allowed="0 or more")

and the flag --hyp_margin, its check and its place in every saved record follow.
"""
import dataclasses
import math


def setting(default, help, choices=None, valid=None, allowed=None, flag=None, command_line=True):
    """A dataclass field: `default` the value an unset setting takes, `help` argparse's text, `choices` the allowed
    values, `valid(value) -> bool` with `allowed` (what is valid, in words) the range check, `flag` the command-line
    spelling (default --<name>), command_line=False for a recorded value that is no flag."""
    return dataclasses.field(default=None, metadata=dict(default=default, help=help, choices=choices, valid=valid,
                                                         allowed=allowed, flag=flag, command_line=command_line))


def at_least(low):
    return lambda value: value >= low  # False for NaN


def finite_at_least(low):
    return lambda value: math.isfinite(value) and value >= low


def above(low):
    return lambda value: math.isfinite(value) and value > low


def between(low, high):
    return lambda value: low <= value <= high


def flag_of(field):
    return field.metadata.get("flag") or f"--{field.name}"


def declared(cls):
    """The fields of `cls` made with setting()."""
    return [f for f in dataclasses.fields(cls) if "default" in f.metadata]


def resolve_unset(instance, fill=None):
    """Set every unset (None) field of `instance` to fill(name) when that is not None, else to its declared
    default; then cast numbers and booleans given as strings or ints to the field's type."""
    for field in declared(type(instance)):
        value = getattr(instance, field.name)
        if value is None:
            value = fill(field.name) if fill is not None else None
            value = field.metadata["default"] if value is None else value
        if value is not None and field.type in (bool, int, float):
            value = field.type(value)
        setattr(instance, field.name, value)


def add_arguments(parser, cls):
    """One argparse option per command-line field of `cls`, default None (unset): booleans are switches."""
    for field in declared(cls):
        meta = field.metadata
        if not meta["command_line"]:
            continue
        help_text = meta["help"] + ("" if meta["default"] in (None, False) else f" (default: {meta['default']})")
        if field.type is bool:
            parser.add_argument(flag_of(field), dest=field.name, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(flag_of(field), dest=field.name, type=field.type, default=None,
                                choices=list(meta["choices"]) if meta["choices"] else None, help=help_text)


def number_rules(cls):
    """(flag, name, valid, allowed) of every field of `cls` with a range, as preflight.FLAG_RULES lists them."""
    return tuple((flag_of(f), f.name, f.metadata["valid"], f.metadata["allowed"])
                 for f in declared(cls) if f.metadata["valid"] is not None)


def defaults(cls):
    """{name: declared default} of `cls`."""
    return {f.name: f.metadata["default"] for f in declared(cls)}
