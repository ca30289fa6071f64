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
import dataclasses
import logging
import os
import pathlib
import re
import secrets
import shutil
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from tfkit import _compat

if TYPE_CHECKING:
    from tfkit.data import DataSpec

logger = logging.getLogger(__name__)

TASKS = ("regression", "binary", "multiclass")
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
TENSOR_FEATURE = "x"  # the tf.Example feature a tensor-input model's classify/regress reads
TOLERANCE = 1e-5
_EXAMPLE_ROWS = 4


class ExportVerificationError(RuntimeError):
    """The reloaded SavedModel does not reproduce the Keras model's predictions."""


@dataclasses.dataclass(frozen=True)
class _Column:
    """One model input as the exported signatures see it."""

    name: str  # the key requests use: the dict key (the column as written) or the input's name
    dtype: tf.DType
    model_shape: tuple[int | None, ...]  # the Keras input's shape, batch dimension included
    keyed: bool  # one of a dict of table columns
    arg: str = ""  # the signature's argument name: a Python identifier and a graph op name

    @property
    def scalar(self) -> bool:
        """A ``(None, 1)`` (or ``(None,)``) table column, served as ``[None]``."""
        return self.keyed and self.model_shape in ((None, 1), (None,))

    @property
    def serving_shape(self) -> list[int | None]:
        return [None] if self.scalar else [None, *self.model_shape[1:]]

    def to_model(self, value: Any) -> Any:
        """A served value in the model's shape: ``[N]`` → ``[N, 1]`` for a ``(None, 1)`` column."""
        return tf.expand_dims(value, -1) if self.scalar and len(self.model_shape) == 2 else value


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
    columns, keyed = _columns(model, example, spec)
    rows = _example_rows(columns, keyed, example)
    # Also builds a model never called yet (a subclassed one), before it is saved.
    output_shape = _output_shape(model, columns, keyed, rows)
    names = _class_names(output_shape, task, class_names)
    module = _ServingModule(model, columns, keyed, task, names, output_shape)

    def write_and_verify(temp: pathlib.Path) -> None:
        signatures, methods = module.write(temp)
        renames = {c.arg: c.name for c in columns if c.arg != c.name}
        _edit_signatures(temp, methods, renames)
        _verify(temp, module, rows, signatures)

    return _write_version(base_path, version, write_and_verify)


def _write_version(
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
        os.rename(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    logger.info("Exported %s version %d to %s", base.name, version, final)
    return final


def _columns(model: Any, example: Any, spec: DataSpec | None) -> tuple[list[_Column], bool]:
    """The model's inputs, and whether it takes them as a dict keyed by column."""
    try:
        structure = _input_structure(model)
    except (AttributeError, ValueError) as exc:  # subclassed, or never built
        if spec is not None:
            return _with_args(*_columns_from_spec(spec))
        if example is not None:
            return _with_args(*_columns_from_example(example))
        raise ValueError(
            f"export needs the model's inputs, and {type(model).__name__} declares none "
            f"(a subclassed model, or one not built yet: {exc}); pass example= (a few rows: "
            "a dict of columns or an array) or spec= (the DataSpec, result.spec)"
        ) from None
    if isinstance(structure, Mapping):
        columns = [
            _Column(str(name), tf.as_dtype(tensor.dtype), tuple(tensor.shape), keyed=True)
            for name, tensor in structure.items()
        ]
        return _with_args(columns, True)
    if isinstance(structure, (list, tuple)):
        if len(structure) != 1:
            raise ValueError("a model with several inputs must take them as a dict of columns")
        structure = structure[0]
    name = getattr(structure, "name", "") or ""
    if re.fullmatch(r"(keras_tensor(_\d+)?)?", name):  # unnamed: Keras counts its tensors
        name = "x"
    column = _Column(name, tf.as_dtype(structure.dtype), tuple(structure.shape), keyed=False)
    return _with_args([column], False)


def _input_structure(model: Any) -> Any:
    """``model.input``; Keras 3.15's Sequential raises there even when built, so its ``inputs``."""
    try:
        return model.input
    except (AttributeError, ValueError):
        inputs = model.inputs
        if not inputs:
            raise
        return inputs


def _columns_from_spec(spec: DataSpec) -> tuple[list[_Column], bool]:
    if spec.kind == "table":
        columns = [_Column(c, tf.float32, (None, 1), keyed=True) for c in spec.numeric_columns]
        columns += [_Column(c, tf.string, (None, 1), keyed=True) for c in spec.string_columns]
        return columns, True
    dtype = tf.int32 if spec.kind == "text" else tf.float32  # text: token ids
    return [_Column("x", dtype, (None, *spec.input_shape), keyed=False)], False


def _columns_from_example(example: Any) -> tuple[list[_Column], bool]:
    if isinstance(example, Mapping):
        columns = []
        for name, values in example.items():
            values = np.asarray(values)
            columns.append(_Column(str(name), _dtype_of(values), (None, *values.shape[1:]), True))
        return columns, True
    values = np.asarray(example)
    return [_Column("x", _dtype_of(values), (None, *values.shape[1:]), keyed=False)], False


def _dtype_of(values: np.ndarray) -> tf.DType:
    """What a request's JSON values become: text, float32 (as Keras computes) or the ints given."""
    if values.dtype.kind in "OUS":
        return tf.string
    if values.dtype.kind == "f":
        return tf.float32
    return tf.as_dtype(values.dtype)


def _with_args(columns: list[_Column], keyed: bool) -> tuple[list[_Column], bool]:
    """The columns with their signature argument names, unique, in the columns' order."""
    args = _argument_names([c.name for c in columns])
    return [dataclasses.replace(c, arg=args[c.name]) for c in columns], keyed


def _argument_names(names: Sequence[str]) -> dict[str, str]:
    """Python identifiers that are also graph op names, as TensorFlow's signatures need.

    Each is what TensorFlow makes of the name for a keyword argument (each
    character that is not a letter or digit becomes "_", and "arg_" goes before
    a leading non-letter), in ASCII, so that ``tf.saved_model.load`` callers may
    also pass the column's own name. A name already valid is kept; a clash gets
    "_2", "_3", ...
    """
    chosen = {n: n for n in names if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n)}
    taken = set(chosen.values())
    for name in names:
        if name in chosen:
            continue
        text = unicodedata.normalize("NFKD", name.replace("ß", "ss"))
        text = "".join("_" if not (ch.isascii() and ch.isalnum()) else ch
                       for ch in text if not unicodedata.combining(ch))
        base = text if text[:1].isalpha() else f"arg_{text}"
        arg, n = base, 2
        while arg in taken:
            arg, n = f"{base}_{n}", n + 1
        chosen[name] = arg
        taken.add(arg)
    return chosen


def _output_shape(
    model: Any, columns: list[_Column], keyed: bool, rows: dict[str, np.ndarray]
) -> tuple[int | None, ...]:
    """The model's first output shape; a model that declares none is run on ``rows``."""
    outputs = getattr(model, "outputs", None)
    if outputs:
        return tuple(outputs[0].shape)
    features = {c.name: c.to_model(tf.constant(rows[c.name])) for c in columns}
    answer = model(features if keyed else features[columns[0].name], training=False)
    first = next(iter(answer.values())) if isinstance(answer, Mapping) else tf.nest.flatten(
        answer)[0]
    return (None, *first.shape[1:])


def _class_names(
    output_shape: tuple[int | None, ...], task: str | None, class_names: Sequence[str] | None
) -> list[str]:
    if task not in ("binary", "multiclass"):
        return []
    count = 2 if task == "binary" else output_shape[-1]
    if class_names is None:
        if count is None:
            raise ValueError("the number of classes is unknown; pass class_names")
        return [str(i) for i in range(count)]
    names = [str(n) for n in class_names]
    if count is not None and len(names) != count:
        raise ValueError(f"class_names has {len(names)} names, the model has {count} classes")
    return names


class _ServingModule:
    """Wraps the Keras model with the serving, classify and regress functions."""

    def __init__(self, model, columns, keyed, task, class_names, output_shape) -> None:
        self.model = model
        self._columns = columns
        self._keyed = keyed
        self._task = task
        self._class_names = class_names
        self._output_shape = output_shape

    def call_model(self, features: dict[str, tf.Tensor]) -> Any:
        """Runs the Keras model on model-shaped features and post-processes its output."""
        inputs = features if self._keyed else features[self._columns[0].name]
        outputs = self.model(inputs, training=False)
        if isinstance(outputs, Mapping) or self._task is None and isinstance(outputs, list):
            return outputs
        outputs = tf.cast(outputs, tf.float32)
        if self._task == "binary":
            positive = tf.reshape(outputs, [-1, 1])
            outputs = tf.concat([1.0 - positive, positive], axis=-1)
        return outputs

    def serve(self, columns: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        features = {c.name: c.to_model(columns[c.name]) for c in self._columns}
        return self._answer(self.call_model(features))

    def _answer(self, outputs: Any) -> dict[str, tf.Tensor]:
        if isinstance(outputs, Mapping):
            return dict(outputs)
        if isinstance(outputs, list):
            return {f"output_{i}": o for i, o in enumerate(outputs)}
        if self._class_names:
            class_ids = tf.argmax(outputs, axis=-1, output_type=tf.int64)
            return {
                "probabilities": outputs,
                "class_ids": class_ids,
                "classes": tf.gather(tf.constant(list(self._class_names)), class_ids),
            }
        return {"predictions": _squeeze_last(outputs)}

    def parse(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        """Model-shaped features from serialized ``tf.Example`` protos."""
        if not self._keyed:
            column = self._columns[0]
            spec = {TENSOR_FEATURE: tf.io.FixedLenFeature(column.model_shape[1:], tf.float32)}
            parsed = tf.io.parse_example(serialized, spec)[TENSOR_FEATURE]
            return {column.name: tf.cast(parsed, column.dtype)}
        spec = {
            c.name: tf.io.FixedLenFeature(c.model_shape[1:], _feature_dtype(c.dtype))
            for c in self._columns
        }
        parsed = tf.io.parse_example(serialized, spec)
        return {c.name: tf.cast(parsed[c.name], c.dtype) for c in self._columns}

    def classify(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        scores = self.call_model(self.parse(inputs))
        classes = tf.tile(tf.constant([list(self._class_names)]), [tf.shape(scores)[0], 1])
        return {"classes": classes, "scores": scores}

    def regress(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": tf.reshape(self.call_model(self.parse(inputs)), [-1])}

    def write(self, path: pathlib.Path) -> tuple[list[str], dict[str, str]]:
        """Saves the SavedModel; returns its signature names and the methods TF Serving needs.

        Keras' ``ExportArchive`` does the saving: it tracks a Keras 3 model's
        variables and lookup tables so that TF1-style loaders (TF Serving's, and
        this project's server) restore them; a plain ``tf.Module`` wrapper does not.
        """
        import keras

        archive = keras.export.ExportArchive()
        archive.track(self.model)
        # Keyed by the column as written; named (what the graph and the signature
        # see) by its argument name, put back to the column by _edit_signatures.
        specs = {
            c.name: tf.TensorSpec(c.serving_shape, c.dtype, name=c.arg) for c in self._columns
        }
        archive.add_endpoint("serving_default", self.serve, input_signature=[specs])
        methods = {}
        examples = tf.TensorSpec([None], tf.string, name="inputs")
        parsable = self._keyed or None not in self._columns[0].model_shape[1:]
        if parsable and self._class_names:
            archive.add_endpoint("classify", self.classify, input_signature=[examples])
            methods["classify"] = CLASSIFY_METHOD
        elif parsable and self._task == "regression" and self._single_unit():
            archive.add_endpoint("regress", self.regress, input_signature=[examples])
            methods["regress"] = REGRESS_METHOD
        archive.write_out(str(path), verbose=False)
        return ["serving_default", *methods], methods

    def _single_unit(self) -> bool:
        shape = self._output_shape
        return len(shape) == 1 or (len(shape) == 2 and shape[-1] == 1)


def _squeeze_last(tensor: tf.Tensor) -> tf.Tensor:
    if tensor.shape.rank == 2 and tensor.shape[-1] == 1:
        return tf.squeeze(tensor, axis=-1)
    return tensor


def _feature_dtype(dtype: tf.DType) -> tf.DType:
    if dtype == tf.string:
        return tf.string
    return tf.float32 if dtype.is_floating else tf.int64


def _edit_signatures(
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
    from tensorflow.core.protobuf import saved_model_pb2

    pb_path = path / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(pb_path.read_bytes())
    for meta_graph in saved_model.meta_graphs:
        for key, method in methods.items():
            if key in meta_graph.signature_def:
                meta_graph.signature_def[key].method_name = method
        inputs = meta_graph.signature_def["serving_default"].inputs
        for arg, name in renames.items():
            inputs[name].CopyFrom(inputs[arg])
            del inputs[arg]
    pb_path.write_bytes(saved_model.SerializeToString())
    _compat.write_fingerprint(path)


def _example_rows(columns: list[_Column], keyed: bool, example: Any) -> dict[str, np.ndarray]:
    """Example rows keyed by column, each in the serving signature's shape."""
    rng = np.random.default_rng(0)
    rows = {}
    for column in columns:
        if example is None:
            values = _synthesize(column, rng)
        else:
            values = example[column.name] if keyed else example
            values = np.asarray(values)
            if column.scalar:
                values = values.reshape(-1)
        if column.dtype == tf.string:
            values = np.asarray(values, dtype=object)
        else:
            values = values.astype(column.dtype.as_numpy_dtype)
        rows[column.name] = values
    return rows


def _synthesize(column: _Column, rng: np.random.Generator) -> np.ndarray:
    shape = [_EXAMPLE_ROWS] + [d or 1 for d in column.serving_shape[1:]]
    if column.dtype == tf.string:
        return np.full(shape, "", dtype=object)  # lookups map it to their OOV index
    if column.dtype.is_integer:
        return rng.integers(0, 2, size=shape)
    return rng.normal(size=shape)


def _verify(
    path: pathlib.Path,
    module: _ServingModule,
    rows: dict[str, np.ndarray],
    signatures: Sequence[str],
) -> None:
    """Reloads the export and compares it with the in-memory Keras model."""
    features = {c.name: c.to_model(tf.constant(rows[c.name])) for c in module._columns}
    expected = _numpy(module._answer(module.call_model(features)))
    loaded = tf.saved_model.load(str(path))
    served = _numpy(loaded.signatures["serving_default"](
        **{c.arg: tf.constant(rows[c.name]) for c in module._columns}
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


def _serialize(rows: dict[str, np.ndarray], module: _ServingModule) -> list[bytes]:
    count = len(next(iter(rows.values())))
    serialized = []
    for i in range(count):
        features = {}
        for column in module._columns:
            value = np.asarray(rows[column.name][i]).reshape(-1)
            key = column.name if module._keyed else TENSOR_FEATURE
            if column.dtype == tf.string:
                data = [v if isinstance(v, bytes) else str(v).encode() for v in value]
                features[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=data))
            elif column.dtype.is_floating or not module._keyed:
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
    module = _LanguageModule(model, context, temperature)

    def write_and_verify(temp: pathlib.Path) -> None:
        module.write(temp)
        _verify_language_model(temp, module)

    return _write_version(base_path, version, write_and_verify)


class _LanguageModule:
    """The generation signatures around a character language model."""

    def __init__(self, model: Any, context: int, temperature: float) -> None:
        self.model, self.context, self.temperature = model, context, temperature
        self.draw_seed = secrets.randbelow(2**31)  # each export draws its own sequence

    def generate(self, prompt: tf.Tensor, length: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """One text per prompt; row i samples with the key ``[seed, i]``."""
        from tfkit import text

        prompts = tf.reshape(prompt, [-1])
        rows = tf.shape(prompts)[0]
        lengths = tf.broadcast_to(tf.reshape(tf.cast(length, tf.int32), [-1]), [rows])
        lengths = tf.clip_by_value(lengths, 0, text.MAX_GENERATED)
        keys = tf.stack([tf.fill([rows], tf.cast(seed, tf.int64)),
                         tf.range(tf.cast(rows, tf.int64))], axis=1)

        def one(args):
            row_prompt, row_length, key = args
            return text.sample_text(self.model, row_prompt, row_length,
                                    temperature=tf.constant(self.temperature), seed=key,
                                    context=self.context)

        return tf.map_fn(one, (prompts, lengths, keys), fn_output_signature=tf.string)

    def serve(self, prompt: tf.Tensor, length: tf.Tensor) -> dict[str, tf.Tensor]:
        # A fresh key per request from a seeded stateful draw: seeded because op
        # determinism (on for CPU training) refuses unseeded draws and timestamps.
        seed = tf.random.uniform([], maxval=2**62, dtype=tf.int64, seed=self.draw_seed)
        return {"text": self.generate(prompt, length, seed)}

    def serve_seeded(self, prompt, length, seed) -> dict[str, tf.Tensor]:
        return {"text": self.generate(prompt, length, tf.reshape(seed, [-1])[0])}

    def write(self, path: pathlib.Path) -> None:
        import keras

        archive = keras.export.ExportArchive()
        archive.track(self.model)
        # Unknown shapes: a row request feeds [N] values, a columnar one may feed
        # a scalar length; the server feeds either unchecked, as TF Serving does.
        prompt = tf.TensorSpec(None, tf.string, name="prompt")
        length = tf.TensorSpec(None, tf.int32, name="length")
        seed = tf.TensorSpec(None, tf.int64, name="seed")
        archive.add_endpoint("serving_default", self.serve, input_signature=[prompt, length])
        archive.add_endpoint("generate_seeded", self.serve_seeded,
                             input_signature=[prompt, length, seed])
        archive.write_out(str(path), verbose=False)


def _verify_language_model(path: pathlib.Path, module: _LanguageModule) -> None:
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


def _next_version(base: pathlib.Path) -> int:
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


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
