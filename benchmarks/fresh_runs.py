"""Fresh processes taking turns: how the benchmarks of start-up costs run their variants.

Each run is ``python -c CODE KIND *ARGS`` in a new process, the kinds alternating, so a
slower minute of a noisy machine falls on both. CODE prints one JSON object as its last
line: that run's measurements.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys


def alternate(code: str, kinds: tuple[str, ...], runs: int, *args: str) -> dict[str, list[dict]]:
    """Every kind `runs` times, in turns; each run's JSON, printed as it comes."""
    results: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for i in range(runs):
        for kind in kinds:
            done = subprocess.run([sys.executable, "-c", code, kind, *args],
                                  capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"run {i + 1} {kind} failed:\n{done.stderr[-3000:]}")
            results[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"run {i + 1} {kind:<9} {results[kind][-1]}", flush=True)
    return results


def medians(results: dict[str, list[dict]], key: str) -> dict[str, float]:
    return {kind: statistics.median(run[key] for run in runs) for kind, runs in results.items()}
