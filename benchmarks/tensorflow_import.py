"""A process tfkit runs from its start, which freezes TensorFlow's objects, against a
script, which does not.

Each run is a fresh process: it installs ``tfkit._quiet`` as every tfkit process does,
imports TensorFlow (which imports Keras), then trains the penguins MLP for 5 epochs with
no logs and no export, as a short ``tfkit train`` does. The kinds alternate:

- "own": a ``tfkit`` command or server worker (``_quiet.own_process()``): the import runs
  with the garbage collector paused, and everything alive after it is frozen;
- "script": a user's script: neither.

Each run reports the import's and the training's CPU time and the collector's share of
each (``gc.callbacks``).

    python benchmarks/tensorflow_import.py             # 7 runs each
    python benchmarks/tensorflow_import.py --runs 11
"""

from __future__ import annotations

import argparse

from fresh_runs import alternate, medians

RUN = r"""
import gc, json, sys, time
from tfkit import _quiet
if sys.argv[1] == "own":
    _quiet.own_process()
spent, started = [0.0], [0.0]
def timed(phase, info):
    if phase == "start":
        started[0] = time.process_time()
    else:
        spent[0] += time.process_time() - started[0]
gc.callbacks.append(timed)
_quiet.install()
before = time.process_time()
import tensorflow
imported, import_collector = time.process_time(), spent[0]
import tfkit
tfkit.train("penguins", epochs=5, logdir=None, export=None, verbose=0)
trained = time.process_time()
print(json.dumps({"import": imported - before, "import_collector": import_collector,
                  "train": trained - imported, "train_collector": spent[0] - import_collector,
                  "import + train": trained - before}))
"""
KINDS = ("own", "script")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    runs = alternate(RUN, KINDS, args.runs)
    print("medians, CPU s:")
    for key in ("import", "import_collector", "train", "train_collector", "import + train"):
        values = medians(runs, key)
        print(f"  {key:<17}" + "".join(f"{kind} {values[kind]:5.2f}   " for kind in KINDS))
    whole = medians(runs, "import + train")
    print(f"ratio of import + train, own/script: {whole['own'] / whole['script']:.2f}")


if __name__ == "__main__":
    main()
