"""The `tfkit` command: train, quickstart, tutorial, devices, export, serve."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import inspect
import io
import json
import logging
import os
import re
import sys
import tokenize
import types
import typing
import warnings
from collections.abc import Callable
from typing import Any

from tfkit import _quiet, config
from tfkit.config import TrainConfig
from tfkit.interrupts import TrainingInterrupted

# TensorFlow starts only once a command runs (or, for these two, once its flags are
# added: they live beside code that needs TensorFlow), so `--help` answers at once.
_LAZY_COMMANDS = {
    "export": ("tfkit.export", "add_export_arguments", "run_export",
               "export a saved Keras model as a versioned SavedModel"),
    "serve": ("serving.cli", "add_serve_arguments", "run_serve",
              "serve a model repository over TF Serving's REST API"),
}
# A flag's choices, for the fields that have a fixed set (config.py declares each set).
_CHOICES: dict[str, tuple] = {
    "task": config.TASKS,
    "optimizer": config.OPTIMIZERS,
    "lr_schedule": config.LR_SCHEDULES,
    "missing": config.MISSING_POLICIES,
    "on_nan": config.NAN_POLICIES,
    "mixed_precision": config.MIXED_PRECISIONS,
    "verbose": config.VERBOSITY,
}
# Shown in help, not enforced by argparse: TrainConfig checks them (cpu:N has no fixed set).
_LISTED = {"strategy": (*config.STRATEGY_NAMES, "cpu:N")}
# Fields given as a JSON object on the command line, with an example each.
_JSON_EXAMPLES = {
    "model_kwargs": '{"hidden": [64, 64]}',
    "column_types": '{"zip": "categorical", "rooms": "numeric"}',
    "class_weight": '{"Adelie": 1, "Chinstrap": 2.5}',
}
_NAME_LISTS = {"metrics"}  # comma-separated names


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tfkit` console script."""
    if argv is None:  # the console script: this process is the command's own
        _quiet.own_process()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"] and "-h" not in argv and "--help" not in argv:
        # The server is always the process `python -m serving` starts, with its own
        # logging; gunicorn's master must not hold TensorFlow before forking workers.
        os.execv(sys.executable, [sys.executable, "-m", "serving", *argv[1:]])
    args = _parser(_command(argv)).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("tfkit", "serving"):
        logging.getLogger(name).setLevel(logging.INFO)
    warnings.formatwarning = _format_warning
    try:
        return args.run(args)
    except ValueError as err:  # bad input: say what is wrong, no stack trace
        print(f"tfkit: error: {err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:
        print(f"tfkit: {stop}", file=sys.stderr)
        return 128 + stop.signum
    except Exception as err:
        if not isinstance(err, _training_failures()):
            raise
        print(f"tfkit: error: {err}", file=sys.stderr)
        return 1


def _training_failures() -> tuple[type[Exception], ...]:
    """Runs that stopped themselves with a message; imported late, as they start TensorFlow."""
    from tfkit.checkpoints import NonFiniteLossError
    from tfkit.memory import OutOfMemoryError
    from tfkit.train import ExportError

    return NonFiniteLossError, OutOfMemoryError, ExportError


_plain_format = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """A warning about the user's data as one line: the source line would be tfkit's own."""
    if category.__name__ == "DataWarning":
        return f"tfkit: warning: {message}\n"
    return _plain_format(message, category, filename, lineno, line)


def _command(argv: list[str]) -> str | None:
    """The subcommand named in argv (the top level has no option taking a value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


class _Parser(argparse.ArgumentParser):
    """Flag errors read like the command's others: one `tfkit: error:` line, exit 2.

    argparse's own form prints the whole usage first (train's is 30 lines) and names
    the subcommand's prog, `tfkit train: error:`.
    """

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"tfkit: error: {message} (see {self.prog} --help)\n")


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="tfkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", help="train a model with tfkit's own loop",
        description="Train a model with tfkit's own loop; each flag is a TrainConfig field.",
    )
    _add_config_flags(train)
    train.set_defaults(run=_run_train)

    quick = sub.add_parser(
        "quickstart", help="train on bundled penguins, log, export, serve one prediction"
    )
    quick.add_argument("--epochs", type=int, default=20, help="(default: %(default)s)")
    quick.add_argument("--models", default="models",
                       help="model repository to export into (default: %(default)s)")
    quick.add_argument("--logdir", default="tensorboard_logs",
                       help="TensorBoard runs go here (default: %(default)s)")
    quick.set_defaults(run=_run_quickstart)

    tutorial = sub.add_parser(
        "tutorial", help="list the runnable lessons, or run one: tfkit tutorial 1 --fast"
    )
    tutorial.add_argument("number", type=int, nargs="?", help="the lesson to run; none: list")
    tutorial.add_argument("--fast", action="store_true", help="a smaller run, under a minute")
    tutorial.add_argument("--workdir", default=None,
                          help="where tensorboard_logs/ and models/ go (default: here)")
    tutorial.add_argument("--notebook", action="store_true",
                          help="write the lesson as a Jupyter notebook here instead of running it")
    tutorial.set_defaults(run=_run_tutorial)

    launch = sub.add_parser(
        "launch", help="run a command as N local workers with TF_CONFIG set (multi-worker)",
        description="Example: tfkit launch --workers 2 -- tfkit train --data digits --model cnn",
    )
    launch.add_argument("--workers", type=int, default=2, help="(default: %(default)s)")
    launch.add_argument("--timeout", type=float, default=None, help="seconds; default: none")
    launch.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    launch.set_defaults(run=_run_launch)

    devices = sub.add_parser("devices", help="show devices and what strategy='auto' picks")
    devices.set_defaults(run=_run_devices)

    for name, (module, add_arguments, run, text) in _LAZY_COMMANDS.items():
        lazy = sub.add_parser(name, help=text)
        if name == command:
            loaded = importlib.import_module(module)
            getattr(loaded, add_arguments)(lazy)
            lazy.set_defaults(run=getattr(loaded, run))
    return parser


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, its help the field's comment in tfkit/config.py."""
    hints = typing.get_type_hints(TrainConfig)
    helps = _field_comments()
    for field in dataclasses.fields(TrainConfig):
        name = field.name
        flag = "--" + name.replace("_", "-")
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        text = helps.get(name, "")
        choices = _CHOICES.get(name) or _LISTED.get(name)
        if choices:
            text += "; choices: " + ", ".join(_shown(c) for c in choices)
        text = (text + f" (default: {_shown(default)})").replace("%", "%%")
        kind = _flag_type(name, hints[name])
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=text)
        else:
            parser.add_argument(flag, type=kind, default=default, help=text,
                                choices=_CHOICES.get(name), metavar=_metavar(name, kind))
    parser.add_argument("--quiet", dest="verbose", action="store_const", const=0,
                        help="the same as --verbose 0")


@functools.cache
def _field_comments() -> dict[str, str]:
    """`name: type = default  # comment` in TrainConfig's source → {name: comment}."""
    try:
        source = inspect.getsource(TrainConfig)
    except OSError:  # installed without sources: flags without their texts
        return {}
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        declaration = re.match(r"\s+(\w+)\s*:", token.line)
        if token.type == tokenize.COMMENT and declaration and token.start[1] > 0:
            comments.setdefault(declaration[1], token.string.lstrip("#").strip())
    return comments


def _flag_type(name: str, hint: Any) -> Any:
    """How a flag's text becomes the field's value; 'none' gives None where None is allowed."""
    if name in _JSON_EXAMPLES:
        return functools.partial(_json_object, flag="--" + name.replace("_", "-"),
                                 example=_JSON_EXAMPLES[name])
    if name in _NAME_LISTS:
        return _optional(_names, "NAME,...")
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for kind in (bool, int, float):
        if kind in options:
            return kind if kind is bool else _optional(kind, kind.__name__)
    return _optional(str, "str")


def _optional(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    def parse_or_none(text: str) -> Any:
        return None if text.lower() in ("none", "") else parse(text)

    parse_or_none.__name__ = name  # argparse names it in "invalid <name> value"
    return parse_or_none


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _json_object(text: str, *, flag: str, example: str) -> dict | None:
    if text.lower() in ("none", ""):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid JSON ({err.msg} at character {err.pos}); "
            f"give a JSON object in single quotes, e.g. {flag} '{example}'"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"{text!r} is JSON but not an object; give one, e.g. {flag} '{example}'"
        )
    return value


def _metavar(name: str, kind: Any) -> str | None:
    if name in _CHOICES:
        return "{" + ",".join(_shown(c) for c in _CHOICES[name]) + "}"
    if name in _JSON_EXAMPLES:
        return "JSON"
    if name in _NAME_LISTS:
        return "NAME,..."
    return name.upper()


def _shown(value: Any) -> str:
    """A default or choice as one would type it: none, not None."""
    if value is None:
        return "none"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _config_from(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def _run_train(args: argparse.Namespace) -> int:
    import tfkit

    result = tfkit.train(config=_config_from(args))
    final = {k: round(v[-1], 4) for k, v in result.history.items()}
    print(json.dumps({"final": final, "logdir": result.logdir, "export_path": result.export_path},
                     indent=2))
    return 0


def _run_devices(args: argparse.Namespace) -> int:
    from tfkit.distribute import describe

    print(json.dumps(describe(), indent=2))
    return 0


def _run_launch(args: argparse.Namespace) -> int:
    from tfkit.launch import launch

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return launch(command, args.workers, timeout=args.timeout)


def _run_tutorial(args: argparse.Namespace) -> int:
    from tfkit import tutorials

    if args.number is None:
        print(tutorials.listing())
        return 0
    if args.notebook:
        try:
            path = tutorials.write_notebook(args.number)
        except FileExistsError as err:
            print(err, file=sys.stderr)
            return 1
        print(f"Wrote: {path}\nOpen it:  jupyter lab {path}\n(Jupyter comes with "
              "pip install 'tfkit[notebooks]'; TFKIT_LESSON_FAST=1 jupyter lab ... takes "
              "the fast path.)")
        return 0
    return tutorials.run(args.number, fast=args.fast, workdir=args.workdir)


def _run_quickstart(args: argparse.Namespace) -> int:
    from tfkit.quickstart import run

    return run(epochs=args.epochs, models=args.models, logdir=args.logdir)


if __name__ == "__main__":
    sys.exit(main())
