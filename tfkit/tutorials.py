"""`tfkit tutorial`: list the lessons, run one as a script, or write out its notebook."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys

LESSONS_DIR = pathlib.Path(__file__).resolve().parent / "lessons"
_LESSON_FILE = re.compile(r"^(\d\d)_\w+\.py$")
_TITLE = re.compile(r"^# # (?:Lesson \d+\. )?(.+)$", re.MULTILINE)  # the first markdown heading
FAST_ENV = "TFKIT_LESSON_FAST"  # "1": every lesson, script or notebook, takes its fast path
NOTEBOOK_WORKDIR = "tfkit_lessons"  # where a notebook writes, in the folder its kernel started in


@dataclasses.dataclass(frozen=True)
class Lesson:
    """One lesson: its number, its script, its notebook beside it, and its title."""

    number: int
    path: pathlib.Path
    title: str

    @property
    def notebook(self) -> pathlib.Path:
        """The notebook made from the script (jupytext's percent format): same name, .ipynb."""
        return self.path.with_suffix(".ipynb")


@dataclasses.dataclass(frozen=True)
class Setup:
    """How a lesson runs: its fast path or the full one, and the folder it writes under."""

    fast: bool
    workdir: pathlib.Path

    def __iter__(self):  # `FAST, WORKDIR = tutorials.setup()`
        return iter((self.fast, self.workdir))


def in_notebook() -> bool:
    """Whether this code runs in a Jupyter kernel rather than as a script."""
    return "ipykernel" in sys.modules


def setup() -> Setup:
    """Read how a lesson should run, make its work folder, and say both.

    As a script: ``--fast`` and ``--workdir DIR`` (default: the current folder).
    In a notebook, which has no command line of its own: fast when
    ``TFKIT_LESSON_FAST=1``, writing under ``tfkit_lessons/`` in the kernel's folder.
    Either way ``TFKIT_LESSON_FAST=1`` takes the fast path. As a script the
    pictures are drawn off screen (see `show`).

    Example:
        >>> FAST, WORKDIR = setup()  # doctest: +SKIP
    """
    fast_env = os.environ.get(FAST_ENV, "") not in ("", "0")
    if in_notebook():
        fast, workdir = fast_env, NOTEBOOK_WORKDIR
    else:
        parser = argparse.ArgumentParser(description="A tfkit lesson, run as a script.")
        parser.add_argument("--fast", action="store_true", help="the small, quick run")
        parser.add_argument("--workdir", default=".", help="what the lesson writes goes here")
        args = parser.parse_args()
        fast, workdir = args.fast or fast_env, args.workdir
        if "matplotlib" in sys.modules:  # a lesson that draws: no window to wait on
            import matplotlib

            matplotlib.use("Agg")  # `show` writes a file instead
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"{'Fast' if fast else 'Full'} run; this lesson writes under {workdir.resolve()}")
    return Setup(fast, workdir)


def show(figure, path: str | os.PathLike) -> None:
    """Save a matplotlib figure to `path` and, in a notebook, draw it in the page.

    Example:
        >>> show(figure, WORKDIR / "loss.png")  # doctest: +SKIP
        Wrote: tfkit_lessons/loss.png
    """
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=100, bbox_inches="tight")
    print(f"Wrote: {path}")
    if in_notebook():
        from IPython.display import display

        display(figure)
    plt.close(figure)  # closed, so the notebook does not draw it a second time


def lessons(directory: pathlib.Path | None = None) -> list[Lesson]:
    """The lessons in `directory` (default: the package's), by number.

    The scripts are read, not imported: listing them starts no TensorFlow. A
    lesson's title is its first markdown heading.

    Example:
        >>> [lesson.number for lesson in lessons()][:2]
        [1, 2]
    """
    found = []
    for path in sorted((directory or LESSONS_DIR).glob("*.py")):
        match = _LESSON_FILE.match(path.name)
        if match:
            title = _TITLE.search(path.read_text(encoding="utf-8"))
            found.append(Lesson(int(match.group(1)), path, title.group(1) if title else path.stem))
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
    if "matplotlib" in lesson.path.read_text(encoding="utf-8") and \
            importlib.util.find_spec("matplotlib") is None:
        print(f"lesson {number} draws with matplotlib: pip install 'tfkit[notebooks]'",
              file=sys.stderr)
        return 2
    env = dict(os.environ)
    package_root = str(pathlib.Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return subprocess.call(command(lesson, fast=fast, workdir=workdir), env=env)


def write_notebook(number: int, folder: str | os.PathLike = ".") -> pathlib.Path:
    """Copy lesson `number`'s notebook into `folder`; returns where it is.

    Raises:
        FileExistsError: the folder already has it (perhaps with your changes): kept as is.

    Example:
        >>> write_notebook(1)  # doctest: +SKIP
        PosixPath('01_what_learning_means.ipynb')
    """
    lesson = find(number)
    target = pathlib.Path(folder) / lesson.notebook.name
    if target.exists():
        raise FileExistsError(f"{target} is already here; open it (jupyter lab {target}), "
                              "or move it away for a fresh copy")
    shutil.copyfile(lesson.notebook, target)
    return target


def listing() -> str:
    """The lessons as a numbered list, with how to run one."""
    lines = ["Lessons (read them in tfkit/lessons/, or run them):", ""]
    lines += [f"  {lesson.number}  {lesson.title}" for lesson in lessons()]
    lines += ["", "Run one:  tfkit tutorial N          (a few minutes)",
              "          tfkit tutorial N --fast   (under a minute)",
              "It writes tensorboard_logs/ (and models/) in the current folder, or --workdir.",
              "As a notebook:  tfkit tutorial N --notebook   (writes it here, then: jupyter lab "
              "<it>; in Jupyter it writes under tfkit_lessons/)"]
    return "\n".join(lines)
