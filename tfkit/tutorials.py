"""`tfkit tutorial`: list the runnable lessons, or run one by number in its own process."""

from __future__ import annotations

import ast
import dataclasses
import os
import pathlib
import re
import subprocess
import sys

LESSONS_DIR = pathlib.Path(__file__).resolve().parent / "lessons"
_LESSON_FILE = re.compile(r"^(\d\d)_\w+\.py$")


@dataclasses.dataclass(frozen=True)
class Lesson:
    """One lesson script: its number, its file and the first line of its docstring."""

    number: int
    path: pathlib.Path
    title: str


def lessons(directory: pathlib.Path | None = None) -> list[Lesson]:
    """The lessons in `directory` (default: the package's), by number.

    The scripts are read, not imported: listing them starts no TensorFlow.

    Example:
        >>> [lesson.number for lesson in lessons()][:2]
        [1, 2]
    """
    found = []
    for path in sorted((directory or LESSONS_DIR).glob("*.py")):
        match = _LESSON_FILE.match(path.name)
        if match:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or path.stem
            found.append(Lesson(int(match.group(1)), path, doc.splitlines()[0]))
    return found


def find(number: int, directory: pathlib.Path | None = None) -> Lesson:
    """The lesson with this number.

    Raises:
        ValueError: no lesson has it; the message lists those that exist.
    """
    available = lessons(directory)
    for lesson in available:
        if lesson.number == number:
            return lesson
    numbers = ", ".join(str(lesson.number) for lesson in available)
    raise ValueError(f"there is no lesson {number}; the lessons are: {numbers}")


def command(lesson: Lesson, *, fast: bool = False, workdir: str | None = None) -> list[str]:
    """The command line that runs a lesson with this Python."""
    args = [sys.executable, str(lesson.path)]
    if fast:
        args.append("--fast")
    if workdir is not None:
        args += ["--workdir", workdir]
    return args


def run(number: int, *, fast: bool = False, workdir: str | None = None) -> int:
    """Run lesson `number` as a child process; returns its exit code.

    The child imports the same tfkit as this process, whether it is installed
    or imported from a source checkout.

    Example:
        >>> run(1, fast=True)  # doctest: +SKIP
        0
    """
    lesson = find(number)
    env = dict(os.environ)
    package_root = str(pathlib.Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return subprocess.call(command(lesson, fast=fast, workdir=workdir), env=env)


def listing() -> str:
    """The lessons as a numbered list, with how to run one."""
    lines = ["Lessons (read them in tfkit/lessons/, or run them):", ""]
    lines += [f"  {lesson.number}  {lesson.title}" for lesson in lessons()]
    lines += ["", "Run one:  tfkit tutorial N          (a few minutes)",
              "          tfkit tutorial N --fast   (under a minute)",
              "It writes tensorboard_logs/ (and models/) in the current folder, or --workdir."]
    return "\n".join(lines)
