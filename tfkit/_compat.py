"""Private TensorFlow and Keras APIs tfkit uses: each with why, checked on TF 2.21, Keras 3.15."""

from __future__ import annotations

import pathlib
from typing import Any

# The TF1 loader's notices, hidden around tfkit's own loads as around the server's.
from serving._compat import deprecation_notices_hidden  # noqa: F401


def write_fingerprint(path: pathlib.Path) -> None:
    """Rewrites a SavedModel's ``fingerprint.pb`` after ``saved_model.pb`` was edited.

    The fingerprint hashes ``saved_model.pb``; only TensorFlow's private
    ``fingerprinting_utils`` writes it. When that is gone, the stale file is
    removed (loaders accept a SavedModel without one). Checked on TF 2.21.
    """
    try:
        from tensorflow.python.saved_model import fingerprinting_utils

        fingerprinting_utils.write_fingerprint(str(path))
    except (ImportError, AttributeError, RuntimeError):
        (path / "fingerprint.pb").unlink(missing_ok=True)


def op_determinism_enabled() -> bool:
    """Whether op determinism is on in this process.

    TensorFlow has a public ``tf.config.experimental.enable_op_determinism`` but
    no public way to ask, needed to put the process's own setting back after a
    run; ``tensorflow.python.framework.config`` has it. Checked on TF 2.21.
    """
    from tensorflow.python.framework import config

    return config.is_op_determinism_enabled()


def disable_op_determinism() -> None:
    """Turns op determinism off again: TensorFlow has no public off switch (checked on TF 2.21)."""
    from tensorflow.python.framework import config

    config.disable_op_determinism()


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process (None: cannot tell).

    TensorFlow decides when it is imported and says so only through the private
    ``_pywrap_util_port.IsMklEnabled``. Checked on TF 2.21; when the module is
    gone, None.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def all_layers(model: Any) -> Any:
    """Every layer of ``model``, nested models' layers included, and the model itself.

    ``model.layers`` lists only the top level; Keras's own walk is the private
    ``Layer._flatten_layers``. Checked on Keras 3.15.
    """
    return model._flatten_layers()


def is_functional(model: Any) -> bool:
    """True for a model made by the functional API itself (``keras.Model(inputs, outputs)``).

    Keras's class for it, ``Functional``, is not public; a subclass of it (or
    of ``keras.Model``) may have a ``call`` or config of its own. Checked on
    Keras 3.15.
    """
    from keras.src.models.functional import Functional

    return type(model) is Functional


def variable_index(optimizer: Any, variable: Any) -> int:
    """The index of ``variable``'s slots in the optimizer's slot lists.

    Keras's optimizers find a weight's slots by the private
    ``_get_variable_index`` (by the variable's path), as their own
    ``update_step`` does. Checked on Keras 3.15.
    """
    return optimizer._get_variable_index(variable)


def adam_slots(optimizer: Any) -> list[list[Any]]:
    """A Keras Adam's first and second moment slots, one list each, by variable index.

    Keras's Adam keeps them in the private ``_momentums`` and ``_velocities``
    (SGD's ``momentums`` are public). Checked on Keras 3.15.
    """
    return [optimizer._momentums, optimizer._velocities]


def attention_projections(layer: Any) -> tuple[Any, Any, Any, Any]:
    """A ``keras.layers.MultiHeadAttention``'s query, key, value and output ``EinsumDense``s.

    Counting the layer's multiply-adds needs each projection's kernel shape;
    Keras keeps the sublayers in private attributes. Checked on Keras 3.15.
    """
    return layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense
