"""The `tfkit` command: train, quickstart, tutorial, devices, export, serve."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import types
import typing
import warnings
from typing import Any

from tfkit.checkpoints import NonFiniteLossError
from tfkit.config import TrainConfig
from tfkit.interrupts import TrainingInterrupted
from tfkit.memory import OutOfMemoryError

# Fields that only make sense from Python (objects, dicts) or are set differently on the CLI.
_NOT_FLAGS = {"model_kwargs", "verbose"}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tfkit` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"] and "-h" not in argv and "--help" not in argv:
        # Importing this package has already started TensorFlow in this process;
        # the server's master must not hold it before forking its worker, so
        # the server runs as a fresh `python -m serving`.
        os.execv(sys.executable, [sys.executable, "-m", "serving", *argv[1:]])
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("tfkit", "serving"):
        logging.getLogger(name).setLevel(logging.INFO)
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    try:
        return args.run(args)
    except ValueError as err:  # bad input: say what is wrong, no stack trace
        print(f"tfkit: error: {err}", file=sys.stderr)
        return 2
    except (NonFiniteLossError, OutOfMemoryError) as err:
        print(f"tfkit: error: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as stop:
        print(f"tfkit: {stop}", file=sys.stderr)
        return 128 + stop.signum


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model with tfkit's own loop")
    _add_config_flags(train)
    train.set_defaults(run=_run_train)

    quick = sub.add_parser(
        "quickstart", help="train on bundled penguins, log, export, serve one prediction"
    )
    quick.add_argument("--epochs", type=int, default=20)
    quick.add_argument("--models", default="models", help="model repository to export into")
    quick.add_argument("--logdir", default="tensorboard_logs")
    quick.set_defaults(run=_run_quickstart)

    tutorial = sub.add_parser(
        "tutorial", help="list the runnable lessons, or run one: tfkit tutorial 1 --fast"
    )
    tutorial.add_argument("number", type=int, nargs="?", help="the lesson to run; none: list")
    tutorial.add_argument("--fast", action="store_true", help="a smaller run, under a minute")
    tutorial.add_argument("--workdir", default=None,
                          help="where tensorboard_logs/ and models/ go (default: here)")
    tutorial.set_defaults(run=_run_tutorial)

    launch = sub.add_parser(
        "launch", help="run a command as N local workers with TF_CONFIG set (multi-worker)",
        description="Example: tfkit launch --workers 2 -- tfkit train --data digits --model cnn",
    )
    launch.add_argument("--workers", type=int, default=2)
    launch.add_argument("--timeout", type=float, default=None, help="seconds; default: none")
    launch.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    launch.set_defaults(run=_run_launch)

    devices = sub.add_parser("devices", help="show devices and what strategy='auto' picks")
    devices.set_defaults(run=_run_devices)

    from tfkit.export import add_export_arguments, run_export

    export = sub.add_parser("export", help="export a saved Keras model as a versioned SavedModel")
    add_export_arguments(export)
    export.set_defaults(run=run_export)

    from serving.cli import add_serve_arguments, run_serve

    serve = sub.add_parser("serve", help="serve a model repository over TF Serving's REST API")
    add_serve_arguments(serve)
    serve.set_defaults(run=run_serve)
    return parser


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        if field.name in _NOT_FLAGS:
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = _flag_type(hints[field.name])
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
        else:
            parser.add_argument(flag, type=kind, default=field.default, metavar=field.name.upper())
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _flag_type(hint: Any) -> Any:
    """int/float/bool from a field's type; strings (and 'none') for everything else."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for kind in (bool, int, float):
        if kind in options:
            return kind if kind is bool else _optional(kind)
    return _optional(str)


def _optional(kind: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def _config_from(args: argparse.Namespace) -> TrainConfig:
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if f.name not in _NOT_FLAGS
    }
    return TrainConfig(**values, verbose=False if args.quiet else None)


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
    return tutorials.run(args.number, fast=args.fast, workdir=args.workdir)


def _run_quickstart(args: argparse.Namespace) -> int:
    from tfkit.quickstart import run

    return run(epochs=args.epochs, models=args.models, logdir=args.logdir)


if __name__ == "__main__":
    sys.exit(main())
