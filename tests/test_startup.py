"""Starting tfkit: help without TensorFlow, no TensorFlow noise, public names on first use."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types

import pytest
from conftest import REPO_ROOT

import tfkit

# What TensorFlow prints on its own at start-up, and its notices about deprecated calls.
NOISE = ("port.cc", "cudart_stub", "cuinit", "absl::initializelog", "deprecat", "retracing")
SECONDS = 300


def _env(**extra):
    """This environment without TF_CPP_MIN_LOG_LEVEL (conftest sets it), as a user's shell."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, **extra}


def _python(code, cwd, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          env=_env(**env), capture_output=True, text=True, timeout=SECONDS)


def _noise(stderr):
    return [line for line in stderr.splitlines() if any(n in line.lower() for n in NOISE)]


def test_help_and_config_do_not_start_tensorflow(tmp_path):
    done = _python("""
        import contextlib, io, sys
        from tfkit.cli import main
        import tfkit.config
        for argv in (["--help"], ["train", "--help"]):
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    main(argv)
                except SystemExit:
                    pass
        print(sorted(name for name in ("tensorflow", "keras") if name in sys.modules))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_devices_reports_what_auto_picks_without_tensorflow_noise(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tfkit.cli", "devices"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["auto_picks"] == "cpu"
    assert _noise(done.stderr) == []


def test_training_script_is_quiet_but_shows_the_users_warnings(tmp_path):
    done = _python("""
        import warnings
        import numpy as np
        import pandas as pd
        import tfkit

        table = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 3,
                              "y": np.arange(40.0)})
        table.loc[3, "a"] = np.nan
        warnings.warn("a warning from the user's own code")
        tfkit.train(table, target="y", epochs=1, export="models", logdir="logs")
        for _ in range(6):  # a notebook's many runs: each compiles its own steps
            tfkit.train(table, target="y", epochs=1, export=None, logdir=None, verbose=0)
    """, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _noise(done.stderr) == []
    assert "UserWarning: a warning from the user's own code" in done.stderr
    assert "missing" in done.stdout + done.stderr  # the row dropped for its missing cell
    assert (tmp_path / "models" / "data" / "1" / "saved_model.pb").exists()


def test_importing_a_submodule_first_is_quiet_too(tmp_path):
    done = _python("import tfkit.models", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _noise(done.stderr) == []


def _fake_tensorflow(root, body):
    package = root / "tensorflow"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(body))
    return str(root)


def test_a_broken_tensorflow_import_still_shows_its_error(tmp_path):
    fake = _fake_tensorflow(tmp_path, """
        import os
        os.write(2, b"libtensorflow_cc.so.2: cannot open shared object file\\n")
        raise ImportError("tensorflow is broken here")
    """)
    done = _python("import tfkit; tfkit.train", tmp_path, PYTHONPATH=fake)
    assert done.returncode == 1
    assert "libtensorflow_cc.so.2: cannot open shared object file" in done.stderr
    assert "ImportError: tensorflow is broken here" in done.stderr


def test_start_up_log_lines_go_but_other_text_stays(tmp_path):
    fake = _fake_tensorflow(tmp_path, """
        import os
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called "
                    b"are written to STDERR\\n")
        os.write(2, b"I0000 00:00:1796531345.303618    3720 port.cc:153] oneDNN on\\n")
        os.write(2, b"E0000 00:00:1796531345.303618    3720 x.cc:1] an error line\\n")
        os.write(2, b"numpy was built for another version\\n")
    """)
    quiet = _python("import tfkit, tensorflow", tmp_path, PYTHONPATH=fake)
    assert _noise(quiet.stderr) == [] and "an error line" not in quiet.stderr
    assert "numpy was built for another version" in quiet.stderr
    # A level the user set wins: 2 hides INFO and WARNING lines, not ERROR.
    user = _python("import tfkit, tensorflow", tmp_path, PYTHONPATH=fake,
                   TF_CPP_MIN_LOG_LEVEL="2")
    assert "port.cc" not in user.stderr and "an error line" in user.stderr
    everything = _python("import tfkit, tensorflow", tmp_path, PYTHONPATH=fake,
                         TF_CPP_MIN_LOG_LEVEL="0")
    assert "port.cc" in everything.stderr and "absl::InitializeLog" in everything.stderr


@pytest.mark.parametrize(("before", "level", "expected"), [
    ("", None, "True True 0"),  # a user's script: the collector left alone
    ("_quiet.own_process()", None, "False True 1"),  # tfkit's own: paused, then frozen
    ("_quiet.own_process()", "0", "False True 1"),  # no start-up line hidden: the same
    ("_quiet.own_process(); gc.disable()", None, "False False 1"),  # off stays off
])
def test_tfkits_own_processes_freeze_what_tensorflow_made(tmp_path, before, level, expected):
    fake = _fake_tensorflow(tmp_path, """
        import gc
        collector_on_while_loading = gc.isenabled()
        made_while_loading = [[] for _ in range(1000)]
    """)
    env = {"PYTHONPATH": fake, **({"TF_CPP_MIN_LOG_LEVEL": level} if level else {})}
    done = _python(f"""
        import gc
        from tfkit import _quiet
        {before}
        import tensorflow
        frozen = gc.get_freeze_count() >= len(tensorflow.made_while_loading)
        print(tensorflow.collector_on_while_loading, gc.isenabled(), int(frozen))
    """, tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


def test_the_tfkit_command_and_server_workers_are_tfkits_own(monkeypatch):
    import serving.cli
    from tfkit import _quiet, cli

    marked = []
    monkeypatch.setattr(_quiet, "own_process", lambda: marked.append(True))
    monkeypatch.setattr(sys, "argv", ["tfkit", "tutorial"])
    assert cli.main() == 0  # the console script: no argv given
    assert cli.main(["tutorial"]) == 0  # called from Python: not marked
    assert marked == [True]
    monkeypatch.setattr("serving.app.create_app", lambda config: config)
    assert serving.cli._GunicornServer({}, {"MODELS": "m"}).load() == {"MODELS": "m"}
    assert marked == [True, True]


@pytest.mark.parametrize("name", tfkit.__all__)
def test_every_public_name_resolves(name):
    assert getattr(tfkit, name) is not None
    assert name in dir(tfkit)


def test_train_and_export_stay_functions_after_their_modules_load():
    import tfkit.export
    import tfkit.train  # noqa: F401
    from tfkit import train

    assert tfkit.train is train and train.__name__ == "train"
    assert callable(tfkit.export) and not isinstance(tfkit.export, types.ModuleType)
    assert isinstance(tfkit.TrainConfig(epochs=2), tfkit.TrainConfig)
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        tfkit.trian  # noqa: B018


def _bytecode_is_current(source) -> bool:
    """Whether the .pyc Python would read for `source` exists and matches it (the 16-byte
    header of a timestamp-checked .pyc: magic number, flags 0, mtime, size)."""
    try:
        with open(importlib.util.cache_from_source(source), "rb") as cached:
            header = cached.read(16)
    except FileNotFoundError:
        return False
    stat = os.stat(source)
    return header[:4] == importlib.util.MAGIC_NUMBER and header[4:] == b"".join(
        (value & 0xFFFFFFFF).to_bytes(4, "little")
        for value in (0, int(stat.st_mtime), stat.st_size))


def test_the_suite_starts_by_compiling_the_modules_its_processes_import():
    """The README: the test run byte-compiles every module of tfkit and serving first."""
    sources = [path for package in ("tfkit", "serving")
               for path in (REPO_ROOT / package).rglob("*.py")]
    assert len(sources) > 50
    assert [str(path) for path in sources if not _bytecode_is_current(path)] == []
