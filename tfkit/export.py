"""Export a Keras model as a versioned, self-verified SavedModel that TF Serving can serve.

Layout: ``<base_path>/<version>/`` (``saved_model.pb``, ``variables/``, ``assets/``),
written to ``<base_path>/.tmp-<version>-<random>`` first and renamed into place,
so a server watching ``base_path`` never sees half a model.

Signatures written:

- ``serving_default``: table models (a dict of ``(None, 1)`` inputs keyed by column)
  take each raw column as a ``[None]`` tensor keyed by the column's name as the
  user wrote it, so a request row is ``{"island": "Torgersen", "Lot Area": 8450}``;
  tensor models take their one input, ``[None, ...]``, keyed by its name (``x``
  when the ``keras.Input`` has none). Classifiers answer
  ``probabilities`` (float32 ``[N, C]``), ``class_ids`` (int64 ``[N]``) and
  ``classes`` (string ``[N]``, the predicted class name); regressors answer
  ``predictions`` (float32 ``[N]`` for one output unit, else ``[N, k]``).
- ``classify`` (classifiers) and ``regress`` (one-unit regressors): TF Serving's
  ``:classify``/``:regress`` form. Input ``inputs`` holds serialized ``tf.Example``
  protos; a table model reads one feature per column (float columns as
  ``float_list``, string columns as ``bytes_list``); a tensor model reads one float
  feature named ``x`` holding the input's values flattened in row-major order
  (skipped when the input has unknown inner dimensions). ``classify`` answers
  ``classes`` (string ``[N, C]``) and ``scores`` (float ``[N, C]``); ``regress``
  answers ``outputs`` (float ``[N]``).

Column names may be any text ("Lot Area", "price/sqft", "größe"). TensorFlow
names a signature's inputs after graph ops, which allow neither spaces nor
"/", so the SavedModel is saved with Python-identifier input names
("Lot_Area", "price_sqft", "grosse") and the ``serving_default`` SignatureDef's
input keys are then set back to the column names. Everything that reads the
SignatureDef (TF Serving, KServe, ``saved_model_cli``, a TF1 session and this
project's server) takes the column names. ``tf.saved_model.load`` calls the
signature with keyword arguments, which TensorFlow makes Python identifiers;
there a column is passed by the identifier (``**{"Lot Area": v}`` also works,
as TensorFlow turns it into ``Lot_Area``; a non-ASCII name does not).

A character language model (``export_language_model``) gets generation
signatures instead: ``serving_default`` takes ``prompt`` (string) and ``length``
(int32) and answers ``text``, with the sampling loop inside the graph; the
seeded ``generate_seeded`` also takes ``seed``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from tfkit import _compat
from tfkit.export_files import edit_signatures, write_version
from tfkit.export_inputs import (
    class_names_for,
    example_rows,
    first_output_shape,
    model_columns,
)
from tfkit.export_signatures import (  # noqa: F401 - CLASSIFY_METHOD, REGRESS_METHOD: public here
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    TENSOR_FEATURE,
    LanguageModule,
    ServingModule,
)

if TYPE_CHECKING:
    from tfkit.data import DataSpec

TASKS = ("regression", "binary", "multiclass")
TOLERANCE = 1e-5


class ExportVerificationError(RuntimeError):
    """The reloaded SavedModel does not reproduce the Keras model's predictions."""


def export_model(
    model: Any,
    base_path: str | os.PathLike,
    *,
    task: str | None = None,
    class_names: Sequence[str] | None = None,
    version: int | None = None,
    example: Any | None = None,
    spec: DataSpec | None = None,
) -> pathlib.Path:
    """Writes ``model`` to ``base_path/<version>/`` atomically, after checking the export.

    The SavedModel is written beside its final place, reloaded with
    ``tf.saved_model.load``, and its predictions on ``example`` (or synthesized
    rows) compared with the Keras model's within 1e-5 (relative for values
    beyond 1); only then is it renamed to its version folder.

    Args:
        model: A ``keras.Model`` (functional, Sequential or subclassed) with one
            tensor input, or a dict of ``(None, 1)`` column inputs keyed by column
            name (any text) with preprocessing inside the model. A model with no
            ``model.input`` (subclassed) needs ``example`` or ``spec``.
        base_path: The model's folder in the repository, e.g. ``"models/penguins"``.
        task: ``"regression"``, ``"binary"`` (sigmoid ``[N, 1]`` output),
            ``"multiclass"`` (softmax ``[N, C]``), or None for raw outputs.
        class_names: Class labels for classifiers; default ``"0"`` .. ``"C-1"``.
        version: Version number; default the next free integer (1 for a new model).
        example: A few rows in the model's input format (a dict of columns, or an
            array) to verify the export with; synthesized when None. For a model
            with no ``model.input``, the inputs are also read from it: a dict gives
            one input per key, shaped like its values (a ``[N]`` or ``[N, 1]``
            column is served as one value per row), an array gives one input ``x``.
        spec: The ``DataSpec`` the model was trained on (``result.spec``), for a
            model with no ``model.input``: a table's columns, or one input ``x``.

    Returns:
        The version folder written.

    Raises:
        ValueError: Unknown task, wrong number of class names, or unsupported or
            unknown inputs.
        FileExistsError: ``version`` already exists.
        ExportVerificationError: The reloaded model's predictions differ; nothing is
            left behind.

    Example:
        >>> path = export_model(model, "models/penguins", task="multiclass",
        ...                     class_names=["Adelie", "Chinstrap", "Gentoo"])  # doctest: +SKIP
        >>> path.name  # doctest: +SKIP
        '1'
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")
    columns, keyed = model_columns(model, example, spec)
    rows = example_rows(columns, keyed, example)
    # Also builds a model never called yet (a subclassed one), before it is saved.
    output_shape = first_output_shape(model, columns, keyed, rows)
    names = class_names_for(output_shape, task, class_names)
    module = ServingModule(model, columns, keyed, task, names, output_shape)

    def write_and_verify(temp: pathlib.Path) -> None:
        signatures, methods = module.write(temp)
        renames = {c.arg: c.name for c in columns if c.arg != c.name}
        edit_signatures(temp, methods, renames)
        _verify(temp, module, rows, signatures)

    return write_version(base_path, version, write_and_verify)


def _verify(
    path: pathlib.Path,
    module: ServingModule,
    rows: dict[str, np.ndarray],
    signatures: Sequence[str],
) -> None:
    """Reloads the export and compares it with the in-memory Keras model."""
    features = {c.name: c.to_model(tf.constant(rows[c.name])) for c in module.columns}
    expected = _numpy(module.answer(module.call_model(features)))
    loaded = tf.saved_model.load(str(path))
    served = _numpy(loaded.signatures["serving_default"](
        **{c.arg: tf.constant(rows[c.name]) for c in module.columns}
    ))
    for key, want in expected.items():
        _compare(f"serving_default/{key}", served.get(key), want)
    # TF Serving (and serving/) load SavedModels into a TF1 session, not through
    # tf.saved_model.load; check that path restores every variable and table too.
    session_served = _run_in_session(path, rows)
    for key, want in expected.items():
        _compare(f"serving_default/{key} (TF1 session)", session_served.get(key), want)
    if "classify" in signatures or "regress" in signatures:
        examples = tf.constant(_serialize(rows, module))
        if "classify" in signatures:
            scores = loaded.signatures["classify"](inputs=examples)["scores"].numpy()
            _compare("classify/scores", scores, expected["probabilities"])
        else:
            outputs = loaded.signatures["regress"](inputs=examples)["outputs"].numpy()
            _compare("regress/outputs", outputs, expected["predictions"].reshape(-1))


def _run_in_session(
    path: pathlib.Path, rows: dict[str, np.ndarray], signature_name: str = "serving_default"
) -> dict[str, np.ndarray]:
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        with _compat.deprecation_notices_hidden():
            meta_graph = tf.compat.v1.saved_model.loader.load(
                session, [tf.saved_model.SERVING], str(path)
            )
        signature = meta_graph.signature_def[signature_name]
        feeds = {signature.inputs[name].name: value for name, value in rows.items()}
        keys = sorted(signature.outputs)
        values = session.run([signature.outputs[k].name for k in keys], feeds)
    return dict(zip(keys, values, strict=True))


def _numpy(outputs: Mapping[str, tf.Tensor]) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in outputs.items()}


def _compare(what: str, got: np.ndarray | None, want: np.ndarray) -> None:
    if got is None or got.shape != want.shape:
        raise ExportVerificationError(
            f"{what}: reloaded model answered shape {None if got is None else got.shape}, "
            f"Keras model {want.shape}"
        )
    if want.dtype.kind in "fc":
        # Relative beyond 1: float32 holds ~7 digits, so a forecast of 250.0 (a
        # series in its own units) can differ by 3e-5 between two correct runs.
        scale = np.maximum(1.0, np.abs(want))
        diff = float(np.max(np.abs(got - want) / scale)) if want.size else 0.0
        if not diff <= TOLERANCE:
            raise ExportVerificationError(
                f"{what}: reloaded model differs from the Keras model by {diff:.3g} "
                f"(tolerance {TOLERANCE})"
            )
    elif not np.array_equal(got, want):
        raise ExportVerificationError(f"{what}: reloaded model differs from the Keras model")


def _serialize(rows: dict[str, np.ndarray], module: ServingModule) -> list[bytes]:
    count = len(next(iter(rows.values())))
    serialized = []
    for i in range(count):
        features = {}
        for column in module.columns:
            value = np.asarray(rows[column.name][i]).reshape(-1)
            key = column.name if module.keyed else TENSOR_FEATURE
            if column.dtype == tf.string:
                data = [v if isinstance(v, bytes) else str(v).encode() for v in value]
                features[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=data))
            elif column.dtype.is_floating or not module.keyed:
                features[key] = tf.train.Feature(float_list=tf.train.FloatList(value=value))
            else:
                features[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=value))
        example = tf.train.Example(features=tf.train.Features(feature=features))
        serialized.append(example.SerializeToString())
    return serialized


def export_language_model(
    model: Any,
    base_path: str | os.PathLike,
    *,
    vocabulary: Sequence[str],
    context: int,
    temperature: float = 1.0,
    version: int | None = None,
) -> pathlib.Path:
    """Writes a character language model that generates text inside the graph.

    Signatures (the sampling loop, a ``tf.while_loop`` over positions with the
    input cropped to the last ``context`` characters, runs in the SavedModel):

    - ``serving_default``: ``prompt`` (string, one per row, or a scalar) and
      ``length`` (int32: characters to add, one for all rows or one per row,
      at most 2000) → ``text`` (string ``[N]``: each prompt followed by its
      sampled characters). Fresh randomness per request. Requests:
      ``{"instances": [{"prompt": "def ", "length": 40}]}`` or
      ``{"inputs": {"prompt": ["def "], "length": 40}}``.
    - ``generate_seeded``: the same plus ``seed`` (int64, one per request):
      the same seed gives the same text, as ``tfkit.generate(..., seed=)`` does.

    The export is written atomically and verified like ``export_model``: the
    reloaded model (``tf.saved_model.load`` and a TF1 session, as TF Serving
    loads it) must produce the very text the Keras model produces for a seed.

    Args:
        model: maps character ids ``[N, L]`` (any L up to ``context``) to
            next-character probabilities ``[N, L, V]``.
        base_path: the model's folder in the repository.
        vocabulary: must be ``tfkit.text.VOCABULARY`` (the graph encodes prompts by it).
        context: the longest input the model takes.
        temperature: sampling temperature baked into the signatures.
        version: version number; default the next free one.

    Returns:
        The version folder written.

    Raises:
        ValueError: another vocabulary, or temperature <= 0.
        ExportVerificationError: the reloaded model generates other text.

    Example:
        >>> export_language_model(result.model, "models/docstrings",
        ...                       vocabulary=tfkit.text.VOCABULARY, context=64)  # doctest: +SKIP
    """
    from tfkit import text

    if tuple(vocabulary) != text.VOCABULARY:
        raise ValueError("export_language_model supports tfkit.text.VOCABULARY only")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    module = LanguageModule(model, context, temperature)

    def write_and_verify(temp: pathlib.Path) -> None:
        module.write(temp)
        _verify_language_model(temp, module)

    return write_version(base_path, version, write_and_verify)


def _verify_language_model(path: pathlib.Path, module: LanguageModule) -> None:
    rows = {"prompt": np.array(["def ", ""], dtype=object), "length": np.array([12, 5], np.int32),
            "seed": np.array([7], np.int64)}
    expected = module.serve_seeded(*(tf.constant(v) for v in rows.values()))["text"].numpy()
    loaded = tf.saved_model.load(str(path))
    served = loaded.signatures["generate_seeded"](**{k: tf.constant(v) for k, v in rows.items()})
    _compare("generate_seeded/text", served["text"].numpy(), expected)
    in_session = _run_in_session(path, rows, "generate_seeded")
    _compare("generate_seeded/text (TF1 session)", in_session["text"], expected)
    fresh = _run_in_session(path, {"prompt": rows["prompt"], "length": rows["length"]})["text"]
    lengths = [len(t.decode()) for t in fresh]
    if lengths != [4 + 12, 5]:
        raise ExportVerificationError(f"serving_default/text: lengths {lengths}, want [16, 5]")


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``tfkit export``'s flags.

    Args:
        parser: The (sub)command parser to fill.
    """
    parser.add_argument("--model", required=True, help="a saved Keras model (.keras)")
    parser.add_argument("--name", required=True, help="model name: the folder under --models")
    parser.add_argument("--models", default="models", help="model repository (default: models)")
    parser.add_argument("--task", choices=TASKS, default=None,
                        help="what the model predicts; classifiers also get class names")
    parser.add_argument("--class-names", default=None,
                        help="comma-separated class names, e.g. Adelie,Chinstrap,Gentoo")
    parser.add_argument("--version", type=int, default=None,
                        help="version number (default: the next free one)")


def run_export(args: argparse.Namespace) -> int:
    """Loads a ``.keras`` file and exports it; prints the version folder written.

    Args:
        args: Parsed flags from ``add_export_arguments``.

    Returns:
        The process exit code: 0 on success, 1 on failure.
    """
    import keras

    from tfkit.models import column_keyed_inputs

    class_names = args.class_names.split(",") if args.class_names else None
    try:
        with column_keyed_inputs():  # a table model keyed by column names as written
            model = keras.saving.load_model(args.model)
        path = export_model(
            model,
            pathlib.Path(args.models) / args.name,
            task=args.task,
            class_names=class_names,
            version=args.version,
        )
    except (OSError, ValueError, ExportVerificationError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
