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
import os


def setting(default, help, choices=None, valid=None, allowed=None, flag=None, command_line=True, nargs=None,
            training_only=False, recorded=True):
    """A dataclass field: `default` the value an unset setting takes, `help` argparse's text, `choices` the allowed
    values (or a function returning them, read when asked), `valid(value) -> bool` with `allowed` (what is valid,
    in words) the range check, `flag` the command-line
    spelling (default --<name>), command_line=False for a recorded value that is no flag, nargs argparse's (a
    tuple field of that many values of its element type), training_only: checked only when training (not under
    --eval), recorded: told in a model folder's card."""
    return dataclasses.field(default=None, metadata=dict(default=default, help=help, choices=choices, valid=valid,
                                                         allowed=allowed, flag=flag, command_line=command_line,
                                                         nargs=nargs, training_only=training_only,
                                                         recorded=recorded))


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


def choices_of(field):
    """The field's allowed values (a tuple, or a function giving them, such as a registry's names), or None."""
    choices = field.metadata["choices"]
    return tuple(choices()) if callable(choices) else choices


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


def add_arguments(parser, cls, unset=True):
    """One argparse option per command-line field of `cls`: booleans are switches, a tuple field takes `nargs`
    floats. unset=True: every default is None (unset, resolved later by the class); else the declared default."""
    for field in declared(cls):
        meta = field.metadata
        if not meta["command_line"]:
            continue
        default = None if unset else meta["default"]
        help_text = meta["help"] + ("" if meta["default"] in (None, False) else f" (default: {meta['default']})")
        if field.type is bool:
            parser.add_argument(flag_of(field), dest=field.name, action="store_true",
                                default=None if unset else False, help=help_text)
        else:
            parser.add_argument(flag_of(field), dest=field.name, type=float if field.type is tuple else field.type,
                                default=default, nargs=meta["nargs"], help=help_text,
                                choices=list(choices_of(field)) if meta["choices"] else None)


def number_rules(cls, training_only=False):
    """(flag, name, valid, allowed) of every field of `cls` with a range, as preflight.FLAG_RULES lists them; of the
    fields checked only when training, or of the others."""
    return tuple((flag_of(f), f.name, f.metadata["valid"], f.metadata["allowed"]) for f in declared(cls)
                 if f.metadata["valid"] is not None and f.metadata["training_only"] == training_only)


def recorded(cls):
    """Names of the fields of `cls` a model folder's card tells."""
    return tuple(f.name for f in declared(cls) if f.metadata["recorded"])


def defaults(cls):
    """{name: declared default} of `cls`."""
    return {f.name: f.metadata["default"] for f in declared(cls)}


# ---------------------------------------------------------------------------- config.yaml

# Flags a run's config.yaml leaves out: how this process was started, not what it computes.
NOT_IN_CONFIG_FILE = ("help", "config", "local_rank", "resume", "overwrite")
CONFIG_FILE = "config.yaml"


def parse_command_line(parser, argv=None):
    """parser.parse_args(argv), with the settings of --config FILE (a run's config.yaml) under the flags given on
    the command line: the file's values become the parser's defaults, and the command line is parsed again."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        parser.set_defaults(**read_config_file(parser, args.config))
        args = parser.parse_args(argv)
    return args


def read_config_file(parser, path):
    """{dest: value} of a config.yaml, each value checked as its flag would be; an unreadable file, an unknown key or
    a bad value stops with one `error:` line naming the file and the key."""
    import yaml
    import utils
    try:
        with open(path, encoding="utf-8") as f:
            content = yaml.safe_load(f)
    except OSError as err:
        utils.fail(f"--config {path}: cannot be read ({err.strerror})")
    except yaml.YAMLError as err:
        utils.fail(f"--config {path}: not a YAML file ({' '.join(str(err).split())[:160]})")
    if content is None:
        return {}
    if not isinstance(content, dict):
        utils.fail(f"--config {path}: expected `name: value` lines (a run's config.yaml), got a "
                   f"{type(content).__name__}")
    actions = {action.dest: action for action in parser._actions if action.dest not in NOT_IN_CONFIG_FILE}
    values = {}
    for key, value in content.items():
        if key not in actions:
            utils.fail(f"--config {path}: unknown setting {key!r} (the file's keys are fine_tuning.py's flags "
                       "without the dashes, as the run's config.yaml writes them)")
        try:
            values[key] = config_value(actions[key], value)
        except (TypeError, ValueError) as err:
            utils.fail(f"--config {path}: {key}: {err}")
    return values


def config_value(action, value):
    """`value` from a config file as the flag of `action` takes it; ValueError naming what it takes otherwise."""
    if value is None:
        return None
    if action.nargs == 0:  # a switch
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if action.nargs is not None:
        if not isinstance(value, list) or len(value) != action.nargs:
            raise ValueError(f"expected a list of {action.nargs} values, got {value!r}")
        return [config_value_one(action, v) for v in value]
    return config_value_one(action, value)


def config_value_one(action, value):
    if isinstance(value, (list, dict)) or (isinstance(value, bool) and action.type is not None):
        raise ValueError(f"expected one {getattr(action.type, '__name__', 'str')}, got {value!r}")
    value = action.type(value) if action.type is not None else str(value)
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def write_config_file(output_dir, args, parser):
    """output_dir/config.yaml: every flag's value this run resolved to (not how it was started: NOT_IN_CONFIG_FILE),
    which `--config` reads back to rerun or vary the run."""
    import yaml
    from atomic import atomic_open
    values = {action.dest: getattr(args, action.dest) for action in parser._actions
              if action.dest not in NOT_IN_CONFIG_FILE and hasattr(args, action.dest)}
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    with atomic_open(os.path.join(output_dir, CONFIG_FILE)) as f:
        yaml.safe_dump(values, f, sort_keys=False, allow_unicode=True)
