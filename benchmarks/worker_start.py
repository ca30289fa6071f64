"""A server worker's start: TensorFlow without Keras's import, against the plain import.

Each run is a fresh process doing what a `tfkit serve` worker does before its first
answer: quiet TensorFlow's start-up, start TensorFlow, build the app over a model
repository (loading its models) and answer one predict. "lean" starts TensorFlow as
workers do (`serving._compat.start_tensorflow_without_keras`); "plain" imports it as
any program does, which also imports all of Keras, matplotlib.pyplot and pandas. The
two alternate; each run reports its CPU time (user + system) and peak resident memory.

    python benchmarks/worker_start.py             # 5 runs each
    python benchmarks/worker_start.py --runs 9
"""

from __future__ import annotations

import argparse
import tempfile

from fresh_runs import alternate, medians

WORKER = r"""
import json, resource, sys
from tfkit import _quiet
_quiet.install()
if sys.argv[1] == "lean":
    from serving import _compat
    _compat.start_tensorflow_without_keras()
from serving.app import create_app
app = create_app({"MODELS": sys.argv[2], "FILE_SYSTEM_POLL_WAIT_SECONDS": 0})
answer = app.test_client().post("/v1/models/half_plus_two:predict", json={"instances": [1.0]})
assert answer.get_json() == {"predictions": [2.5]}, answer.get_json()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
                  "keras": "keras" in sys.modules, "pandas": "pandas" in sys.modules}))
"""


def _repository(root: str) -> str:
    """TF Serving's half_plus_two, as the tests keep it."""
    import pathlib
    import shutil

    source = (pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" /
              "tfserving_testdata" / "saved_model_half_plus_two_cpu")
    shutil.copytree(source, pathlib.Path(root) / "half_plus_two")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        runs = alternate(WORKER, ("lean", "plain"), args.runs, _repository(root))
    cpu, rss = medians(runs, "cpu"), medians(runs, "rss_mb")
    print(f"median CPU s:  lean {cpu['lean']:.2f}  plain {cpu['plain']:.2f}  "
          f"ratio lean/plain {cpu['lean'] / cpu['plain']:.2f}")
    print(f"median peak MB: lean {rss['lean']:.0f}  plain {rss['plain']:.0f}  "
          f"ratio lean/plain {rss['lean'] / rss['plain']:.2f}")


if __name__ == "__main__":
    main()
