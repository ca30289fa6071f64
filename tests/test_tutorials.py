"""The lessons: listed by `tfkit tutorial` and the README, and each runs in fast mode."""

import os
import pathlib
import re
import signal
import subprocess
import textwrap

import pytest

from tfkit import cli, tutorials

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
LESSONS = tutorials.lessons()
LESSON_SECONDS = 900  # a generous bound for one fast lesson on a busy 2-core machine
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_the_issue_lessons_are_there():
    numbers = [lesson.number for lesson in LESSONS]
    assert {1, 2, 3, 5, 7} <= set(numbers)
    assert numbers == sorted(numbers)
    assert all(lesson.title and not lesson.title.startswith(("0", "1")) for lesson in LESSONS)


def test_cli_lists_every_lesson(capsys):
    assert cli.main(["tutorial"]) == 0
    out = capsys.readouterr().out
    for lesson in LESSONS:
        assert f"{lesson.number}  {lesson.title}" in out


def test_cli_unknown_lesson_names_the_real_ones(capsys):
    assert cli.main(["tutorial", "99"]) == 2
    err = capsys.readouterr().err
    assert "there is no lesson 99" in err
    assert ", ".join(str(lesson.number) for lesson in LESSONS) in err


def test_readme_learn_section_links_every_lesson_in_order():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Learn", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\]\((tfkit/lessons/\d\d_\w+\.py)\)", section)
    assert links == [lesson.path.relative_to(REPO_ROOT).as_posix() for lesson in LESSONS]


def test_run_passes_flags_and_the_same_tfkit_to_the_child(tmp_path, monkeypatch, capfd):
    # A stand-in lesson that reports what it was given, without starting TensorFlow.
    (tmp_path / "01_echo.py").write_text(textwrap.dedent('''
        """Echo: report the arguments and where tfkit would be imported from."""
        import importlib.util, sys
        print(sys.argv[1:], importlib.util.find_spec("tfkit").origin)
    '''))
    monkeypatch.setattr(tutorials, "LESSONS_DIR", tmp_path)
    monkeypatch.chdir(tmp_path)  # away from the checkout, with no PYTHONPATH to find it
    monkeypatch.delenv("PYTHONPATH", raising=False)
    assert tutorials.run(1, fast=True, workdir="w") == 0
    out = capfd.readouterr().out
    assert "['--fast', '--workdir', 'w']" in out
    assert str(pathlib.Path(tutorials.__file__).resolve().parent / "__init__.py") in out


# What each lesson must leave behind, besides everything it prints as "Wrote: <path>".
EXPECTED = {
    1: ["tensorboard_logs/01_what_learning_means/events.out.tfevents.*"],
    2: ["tensorboard_logs/02_by_hand/train/events.out.tfevents.*",
        "tensorboard_logs/02_tfkit_train/train/events.out.tfevents.*",
        "tensorboard_logs/02_model_fit/train/events.out.tfevents.*"],
    3: ["tensorboard_logs/03_behind_model_fit/batch_8-lr_0.001/train/events.out.tfevents.*",
        "tensorboard_logs/03_behind_model_fit/batch_256-lr_0.001/by_epoch/events.out.tfevents.*"],
    4: ["tensorboard_logs/04_cpu_gpu_tpu_and_memory/cpu/train/events.out.tfevents.*",
        "tensorboard_logs/04_cpu_gpu_tpu_and_memory/cpu_2/train/events.out.tfevents.*"],
    5: ["tensorboard_logs/05_watching_it_learn/good/train/events.out.tfevents.*",
        "tensorboard_logs/05_watching_it_learn/bad/train/events.out.tfevents.*",
        "loss_curve.png"],
    6: ["tensorboard_logs/06_sequences_and_text/sunspots_lstm/train/events.out.tfevents.*",
        "tensorboard_logs/06_sequences_and_text/docstrings_gpt/train/events.out.tfevents.*"],
    7: ["models/penguins/1/saved_model.pb",
        "tensorboard_logs/07_from_model_to_http/train/events.out.tfevents.*"],
}
# What each lesson must have shown.
SAYS = {
    1: [r"off by\s+m: \d\.\d\d %, b: \d\.\d\d %", r"Look at: tensorboard --logdir"],
    2: [r"They agree within 1e-4\.", r"Look at: tensorboard --logdir"],
    3: [r"batch_256-lr_0\.001\s+\d+", r"Look at: tensorboard --logdir"],
    4: [r"strategy='auto' picks '\w+'", r"largest loss difference: \d\.\de[-+]\d\d",
        r"estimate/measured", r"SIMULATED", r"tfkit\.OutOfMemoryError: out of memory",
        r"GPT-2 small .* FLOPs:\n\s+here at [\d.]+ GFLOP/s: .+;  one GPU: ",
        r"Look at: tensorboard --logdir"],
    5: [r"update ratio", r"Look at: tensorboard --logdir"],
    6: [r"LSTM validation MAE \d+\.\d\d against naive \d+\.\d\d",
        r"epoch 1: loss [\d.]+, val_loss [\d.]+ nats/char; it writes:\n    'Return the ",
        r"validation loss [\d.]+ nats/char against the unigram baseline [\d.]+",
        r"Look at: tensorboard --logdir"],
    7: [r"HTTP 200", r'"classes": "\w+"', r"\$ curl -s -X POST", r"server stopped"],
}


@pytest.mark.timeout(LESSON_SECONDS + 120)  # the lessons run side by side: one may wait long
@pytest.mark.xdist_group("lessons")  # one xdist worker starts them all (--dist loadgroup)
@pytest.mark.parametrize("number", [lesson.number for lesson in LESSONS])
def test_lesson_runs_fast(number, lesson_runs):
    process, workdir, log = lesson_runs(number)
    here = workdir.parent / f"{workdir.name}-cwd"
    try:
        process.wait(timeout=LESSON_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the command and its lesson
        pytest.fail(f"lesson {number} did not finish within {LESSON_SECONDS}s")
    log.seek(0)
    out = log.read()
    assert process.returncode == 0, out[-4000:]
    assert list(here.iterdir()) == [], "a lesson writes in --workdir only"
    written = re.findall(r"^Wrote: (.+)$", out, flags=re.MULTILINE)
    assert written, "a lesson says what it wrote"
    for path in written:
        assert pathlib.Path(path).exists(), f"lesson {number} says it wrote {path}"
        assert pathlib.Path(path).resolve().is_relative_to(workdir.resolve())
    for pattern in EXPECTED.get(number, []):
        assert list(workdir.glob(pattern)), f"lesson {number} left no {pattern}"
    for pattern in SAYS.get(number, []):
        assert re.search(pattern, out), f"lesson {number} did not print {pattern!r}"
    if number == 4:  # one device and two replicas: the same training, to ~1e-4 (README)
        gap = float(re.search(r"largest loss difference: (\S+) ", out).group(1))
        assert gap <= 1e-4, out[-4000:]
    if number == 6:  # the LSTM beats "same as last month", by a modest margin (README)
        lstm, naive = map(float, re.search(
            r"LSTM validation MAE (\d+\.\d\d) against naive (\d+\.\d\d)", out).groups())
        assert 0.7 * naive < lstm < naive, (lstm, naive)
    if number == 5:
        png = (workdir / "loss_curve.png").read_bytes()
        assert png.startswith(PNG_SIGNATURE) and len(png) > 20_000
