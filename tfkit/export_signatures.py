"""The exported signatures: serving_default, classify and regress, or text generation."""

from __future__ import annotations

import pathlib
import secrets
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from serving.servable import CLASSIFY_METHOD, REGRESS_METHOD

TENSOR_FEATURE = "x"  # the tf.Example feature a tensor-input model's classify/regress reads


class ServingModule:
    """Wraps the Keras model with the serving, classify and regress functions."""

    def __init__(self, model, columns, keyed, task, class_names, output_shape) -> None:
        self.model = model
        self.columns = columns
        self.keyed = keyed
        self._task = task
        self._class_names = class_names
        self._output_shape = output_shape

    def call_model(self, features: dict[str, tf.Tensor]) -> Any:
        """Runs the Keras model on model-shaped features and post-processes its output."""
        inputs = features if self.keyed else features[self.columns[0].name]
        outputs = self.model(inputs, training=False)
        if isinstance(outputs, Mapping) or self._task is None and isinstance(outputs, list):
            return outputs
        outputs = tf.cast(outputs, tf.float32)
        if self._task == "binary":
            positive = tf.reshape(outputs, [-1, 1])
            outputs = tf.concat([1.0 - positive, positive], axis=-1)
        return outputs

    def serve(self, columns: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        features = {c.name: c.to_model(columns[c.name]) for c in self.columns}
        return self.answer(self.call_model(features))

    def answer(self, outputs: Any) -> dict[str, tf.Tensor]:
        """The serving signature's outputs from the post-processed model outputs."""
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
        if not self.keyed:
            column = self.columns[0]
            spec = {TENSOR_FEATURE: tf.io.FixedLenFeature(column.model_shape[1:], tf.float32)}
            parsed = tf.io.parse_example(serialized, spec)[TENSOR_FEATURE]
            return {column.name: tf.cast(parsed, column.dtype)}
        spec = {
            c.name: tf.io.FixedLenFeature(c.model_shape[1:], _feature_dtype(c.dtype))
            for c in self.columns
        }
        parsed = tf.io.parse_example(serialized, spec)
        return {c.name: tf.cast(parsed[c.name], c.dtype) for c in self.columns}

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
        # see) by its argument name, put back to the column by edit_signatures.
        specs = {
            c.name: tf.TensorSpec(c.serving_shape, c.dtype, name=c.arg) for c in self.columns
        }
        archive.add_endpoint("serving_default", self.serve, input_signature=[specs])
        methods = {}
        examples = tf.TensorSpec([None], tf.string, name="inputs")
        parsable = self.keyed or None not in self.columns[0].model_shape[1:]
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


class LanguageModule:
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
