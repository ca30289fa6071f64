"""The lessons: listed by `tfkit tutorial` and the README, notebooks in step with their scripts,
and each notebook run top to bottom in a fresh kernel, in fast mode."""

import concurrent.futures
import os
import pathlib
import re
import sys
import textwrap

import jupytext
import nbclient
import nbformat
import pytest

from tfkit import cli, tutorials

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
LESSONS = tutorials.lessons()
LESSON_SECONDS = 900  # a generous bound for one fast lesson on a busy 2-core machine
KERNELS_AT_ONCE = 3  # each kernel starts TensorFlow: a few side by side keep 2 cores busy
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REGENERATE = "jupytext --to ipynb --set-kernel python3 tfkit/lessons/[0-9]*.py"


def test_the_first_lessons_are_there():
    numbers = [lesson.number for lesson in LESSONS]
    assert {1, 2, 3, 5, 7, 8} <= set(numbers)
    assert numbers == sorted(numbers)
    assert all(lesson.title and not lesson.title.startswith(("0", "1", "#", "Lesson"))
               for lesson in LESSONS)


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


def test_cli_writes_the_notebook_here_and_says_how_to_open_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["tutorial", "8", "--notebook"]) == 0
    out = capsys.readouterr().out
    written = list(tmp_path.iterdir())
    assert [path.name for path in written] == [LESSONS[-1].notebook.name]
    assert written[0].read_bytes() == LESSONS[-1].notebook.read_bytes()
    assert f"jupyter lab {LESSONS[-1].notebook.name}" in out
    written[0].write_text("{}")  # the learner's own changes: a second copy does not replace them
    assert cli.main(["tutorial", "8", "--notebook"]) == 1
    assert "already here" in capsys.readouterr().err
    assert written[0].read_text() == "{}"


def test_readme_learn_section_links_every_lesson_in_order():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Learn", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\]\((tfkit/lessons/\d\d_\w+\.py)\)", section)
    assert links == [lesson.path.relative_to(REPO_ROOT).as_posix() for lesson in LESSONS]
    assert "--notebook" in section and "jupyter lab" in section


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: f"lesson{lesson.number}")
def test_notebook_is_its_script(lesson):
    """The script is the source; the notebook beside it holds the same cells, made by jupytext."""
    assert lesson.notebook.exists(), f"no {lesson.notebook.name}: run {REGENERATE}"
    made = jupytext.read(lesson.path)
    shipped = nbformat.read(lesson.notebook, as_version=4)

    def cells(notebook):
        return [(cell.cell_type, cell.source, cell.metadata.get("tags", []))
                for cell in notebook.cells]

    assert cells(shipped) == cells(made), f"{lesson.notebook.name} drifted: run {REGENERATE}"
    assert shipped.metadata["kernelspec"]["name"] == "python3"
    assert all(not cell.get("outputs") for cell in shipped.cells), "ship it without outputs"
    first_code = next(cell.source for cell in shipped.cells if cell.cell_type == "code")
    assert not re.search(r"pip|conda|http|urlretrieve|download|^[!%]", first_code, re.M), \
        "the first cell installs and downloads nothing"


def test_setup_reads_the_command_line_and_the_fast_variable(tmp_path, monkeypatch, capsys):
    # As a script (no ipykernel in this process): flags first, TFKIT_LESSON_FAST too.
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "argv", ["lesson.py", "--workdir", str(tmp_path / "w")])
    monkeypatch.delenv(tutorials.FAST_ENV, raising=False)
    assert tuple(tutorials.setup()) == (False, tmp_path / "w")
    monkeypatch.setenv(tutorials.FAST_ENV, "1")
    assert tuple(tutorials.setup()) == (True, tmp_path / "w")
    # In a kernel the command line is the kernel's own: only the variable counts.
    monkeypatch.setitem(sys.modules, "ipykernel", sys)
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "kernel.json"])
    monkeypatch.chdir(tmp_path)
    assert tuple(tutorials.setup()) == (True, pathlib.Path(tutorials.NOTEBOOK_WORKDIR))
    assert (tmp_path / tutorials.NOTEBOOK_WORKDIR).is_dir()
    assert "Fast run" in capsys.readouterr().out


def test_run_passes_flags_and_the_same_tfkit_to_the_child(tmp_path, monkeypatch, capfd):
    # A stand-in lesson that reports what it was given, without starting TensorFlow.
    (tmp_path / "01_echo.py").write_text(textwrap.dedent('''
        # %% [markdown]
        # # Echo: report the arguments and where tfkit would be imported from
        # %%
        import importlib.util, sys
        print(sys.argv[1:], importlib.util.find_spec("tfkit").origin)
    '''))
    monkeypatch.setattr(tutorials, "LESSONS_DIR", tmp_path)
    monkeypatch.chdir(tmp_path)  # away from the checkout, with no PYTHONPATH to find it
    monkeypatch.delenv("PYTHONPATH", raising=False)
    assert tutorials.lessons()[0].title == "Echo: report the arguments and where tfkit would " \
                                          "be imported from"
    assert tutorials.run(1, fast=True, workdir="w") == 0
    out = capfd.readouterr().out
    assert "['--fast', '--workdir', 'w']" in out
    assert str(pathlib.Path(tutorials.__file__).resolve().parent / "__init__.py") in out


# What each lesson must leave in its work folder, besides everything it prints as "Wrote: <path>".
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
    8: ["houses.csv", "models/houses/1/saved_model.pb",
        "tensorboard_logs/08_your_own_data/train/events.out.tfevents.*"],
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
    7: [r"HTTP 200", r'"classes": "\w+"', r"\$ curl -s -X POST", r"server stopped",
        # the gRPC answer is the REST one
        r"PredictionService/Predict → version 1\n\s+probabilities (\[[\d., ]+\]) \(REST: \1\)"],
    8: [r"dropped \d+ row", r"held-out rows: MAE [\d,.]+ against [\d,.]+ for the mean price",
        r"HTTP 200", r"predicted price for .+: [\d,.]+", r"server stopped"],
}
DRAWS = {1, 2, 3, 5, 6}  # lessons whose notebook shows at least one picture
SLOWEST_FIRST = [4, 7, 8, 3, 6, 2, 5, 1]  # by CPU seconds measured alone: long ones first


def _execute(lesson: tutorials.Lesson, here: pathlib.Path) -> nbformat.NotebookNode:
    """Run the notebook as a learner would: a fresh kernel in an empty folder, fast mode."""
    notebook = nbformat.read(lesson.notebook, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=LESSON_SECONDS, kernel_name="python3",
        resources={"metadata": {"path": str(here)}},
        # cells tagged "skip-execution" are skipped: lesson 5's TensorBoard server
    )
    env = {**os.environ, tutorials.FAST_ENV: "1", "PYTHONPATH": str(REPO_ROOT)}
    client.execute(env=env)
    return notebook


@pytest.fixture(scope="module")
def notebook_runs(request, tmp_path_factory):
    """Starts every selected lesson's notebook on first use, a few kernels at a time, each
    in an empty folder of its own: ``notebook_runs(number)`` is a future of (notebook, folder).
    """
    wanted = {item.callspec.params["number"] for item in request.session.items
              if item.originalname == "test_lesson_notebook_runs_fast"}
    order = [n for n in SLOWEST_FIRST if n in wanted] + sorted(wanted - set(SLOWEST_FIRST))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=KERNELS_AT_ONCE)
    futures = {}

    def run(number: int) -> concurrent.futures.Future:
        for other in [n for n in order if n not in futures] + [number]:
            if other not in futures:
                here = tmp_path_factory.mktemp(f"lesson{other:02d}")
                futures[other] = pool.submit(
                    lambda lesson, here: (_execute(lesson, here), here),
                    tutorials.find(other), here)
        return futures[number]

    yield run
    pool.shutdown(wait=True, cancel_futures=True)


def _outputs(notebook) -> list:
    return [output for cell in notebook.cells for output in cell.get("outputs", [])]


@pytest.mark.timeout(2 * LESSON_SECONDS)  # a few at a time: one may wait for another
@pytest.mark.parametrize("number", [lesson.number for lesson in LESSONS])
def test_lesson_notebook_runs_fast(number, notebook_runs):
    try:
        notebook, here = notebook_runs(number).result(timeout=2 * LESSON_SECONDS - 60)
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"lesson {number}'s notebook failed:\n{str(err)[-4000:]}")
    outputs = _outputs(notebook)
    out = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    assert [o for o in outputs if o.output_type == "error"] == []
    assert "Traceback" not in "".join(o.get("text", "") for o in outputs)
    if number in DRAWS:
        pictures = [o for o in outputs if "image/png" in o.get("data", {})]
        assert pictures, f"lesson {number} draws no picture"
    workdir = here / tutorials.NOTEBOOK_WORKDIR
    assert [path.name for path in here.iterdir()] == [tutorials.NOTEBOOK_WORKDIR], \
        "a lesson writes in its work folder only"
    written = re.findall(r"^Wrote: (.+)$", out, flags=re.MULTILINE)
    assert written, "a lesson says what it wrote"
    for path in written:
        assert (here / path).exists(), f"lesson {number} says it wrote {path}"
        assert (here / path).resolve().is_relative_to(workdir.resolve())
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
        sources = "\n".join(cell.source for cell in notebook.cells)
        assert "%load_ext tensorboard" in sources and "%tensorboard --logdir" in sources
