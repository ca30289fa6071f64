"""The export's files: the atomic version folder, and the SignatureDef edits in saved_model.pb."""

from __future__ import annotations

import logging
import os
import pathlib
import secrets
import shutil
from collections.abc import Mapping
from typing import Any

from tfkit import _compat

logger = logging.getLogger("tfkit.export")  # the log line is the public function's


def write_version(
    base_path: str | os.PathLike, version: int | None, write_and_verify: Any
) -> pathlib.Path:
    """Calls ``write_and_verify(temp_dir)``, then renames the folder to ``base_path/<version>``.

    Nothing is left behind when writing or verifying raises.
    """
    base = pathlib.Path(base_path)
    base.mkdir(parents=True, exist_ok=True)
    version = _next_version(base) if version is None else int(version)
    final = base / str(version)
    if final.exists():
        raise FileExistsError(f"{final} already exists; pick another version")
    temp = base / f".tmp-{version}-{secrets.token_hex(4)}"
    try:
        write_and_verify(temp)
        changed = _changed_signature(base, temp)
        os.rename(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    logger.info("Exported %s version %d to %s", base.name, version, final)
    if changed:
        logger.warning(
            "%s version %d has %s: a request for %r without a version is answered by "
            "version %d, which old clients may not fit; if it is another model, export it "
            "under a name of its own (model_name= / --model-name)", base.name, version, changed,
            base.name, version)
    return final


def _changed_signature(base: pathlib.Path, written: pathlib.Path) -> str | None:
    """How the serving_default input or output names differ from the newest earlier version's."""
    versions = _versions(base)
    if not versions:
        return None
    before, after = (_signature_keys(folder) for folder in (base / str(max(versions)), written))
    if before is None or after is None or before == after:
        return None
    parts = []
    for kind, old, new in zip(("inputs", "outputs"), before, after, strict=True):
        if old != new:
            parts.append(f"{kind} {', '.join(map(repr, sorted(new)))} where version "
                         f"{max(versions)} had {', '.join(map(repr, sorted(old)))}")
    return "; ".join(parts)


def _signature_keys(folder: pathlib.Path) -> tuple[frozenset, frozenset] | None:
    """The serving_default signature's input and output keys, or None without one to read."""
    from google.protobuf.message import DecodeError

    try:
        saved_model = _read_saved_model(folder)
    except (OSError, DecodeError):  # a version without a readable file: nothing to compare
        return None
    for meta_graph in saved_model.meta_graphs:
        if "serving_default" in meta_graph.signature_def:
            signature = meta_graph.signature_def["serving_default"]
            return frozenset(signature.inputs), frozenset(signature.outputs)
    return None


def _versions(base: pathlib.Path) -> list[int]:
    return [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]


def _next_version(base: pathlib.Path) -> int:
    return max(_versions(base), default=0) + 1


def edit_signatures(
    path: pathlib.Path, methods: Mapping[str, str], renames: Mapping[str, str]
) -> None:
    """Sets what ``tf.saved_model.save`` cannot write in the SignatureDefs.

    - Method names: it labels every signature ``tensorflow/serving/predict``, and
      TF Serving refuses :classify/:regress on such a signature.
    - ``serving_default``'s input keys: it keys them by argument name (``Lot_Area``);
      ``renames`` puts back the column names (``Lot Area``) clients send.
    """
    if not methods and not renames:
        return
    saved_model = _read_saved_model(path)
    for meta_graph in saved_model.meta_graphs:
        for key, method in methods.items():
            if key in meta_graph.signature_def:
                meta_graph.signature_def[key].method_name = method
        inputs = meta_graph.signature_def["serving_default"].inputs
        for arg, name in renames.items():
            inputs[name].CopyFrom(inputs[arg])
            del inputs[arg]
    (path / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    _compat.write_fingerprint(path)


def _read_saved_model(folder: pathlib.Path) -> Any:
    """The SavedModel proto in ``folder/saved_model.pb``."""
    from tensorflow.core.protobuf import saved_model_pb2

    return saved_model_pb2.SavedModel.FromString((folder / "saved_model.pb").read_bytes())
