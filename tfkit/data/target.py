"""The target: which task it implies, its labels and classes, its scale and weights."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from tfkit.data.messages import did_you_mean, list_names

MAX_CLASSES_FOR_INTEGER_TARGET = 32  # more distinct integers than this reads as a quantity
# Whole numbers read as class ids only inside -1..100: people number classes 0..C-1,
# 1..C or -1/+1. A price rounded to 50k or a year has few distinct values too, but
# values in the thousands are quantities, and a classifier over them would be wrong.
CLASS_ID_RANGE = (-1, 100)


def infer_task(y: np.ndarray, task: str, what: str) -> tuple[str, str]:
    """The task and the report's line saying why, and how to override it."""
    numeric = is_numeric(y)
    if not numeric:
        classes = np.unique(y.astype(str))
    else:
        classes = np.unique(y.astype(np.float64))
    if task != "auto":
        return task, f"task: {task} (as given) — {what} has {len(classes)} distinct values"
    names = list_names(class_name(c) for c in classes) if numeric else list_names(classes)
    if not numeric:
        task = "binary" if len(classes) == 2 else "multiclass"
        other = "multiclass" if task == "binary" else ""
        return task, (f"task: {task} — {what} is text with {len(classes)} classes ({names})"
                      + (f"; pass task='{other}' for a softmax over them" if other else ""))
    low, high = CLASS_ID_RANGE
    whole = bool(np.all(np.mod(classes, 1) == 0))
    if whole and low <= classes[0] and classes[-1] <= high and (
            len(classes) <= MAX_CLASSES_FOR_INTEGER_TARGET):
        task = "binary" if len(classes) == 2 else "multiclass"
        return task, (f"task: {task} — {what} holds {len(classes)} whole numbers ({names}), "
                      "read as class ids; pass task='regression' to predict them as quantities")
    return "regression", (f"task: regression — {what} has {len(classes)} distinct numbers"
                          f"{_not_classes(classes, whole)}; "
                          "pass task='multiclass' to treat them as classes")


def _not_classes(classes: np.ndarray, whole: bool) -> str:
    """Why distinct numbers do not read as class ids, as a clause of the report line."""
    low, high = CLASS_ID_RANGE
    if not whole:
        return ", not all whole"
    if len(classes) > MAX_CLASSES_FOR_INTEGER_TARGET:
        return f", more than {MAX_CLASSES_FOR_INTEGER_TARGET} to be classes"
    return (f", whole but from {class_name(classes[0])} to {class_name(classes[-1])}, "
            f"outside the class ids {low}..{high}")


def encode(y: np.ndarray, task: str, what: str, class_names: tuple[str, ...] | None = None):
    """(labels, class_names): int64 class ids (float32 0/1 for binary) or float32 values.

    Given `class_names` (the training classes), labels are ids into them and a
    class not among them is an error.
    """
    numeric = is_numeric(y)
    if task == "regression":
        if not numeric:
            raise ValueError(
                f"{what} holds text labels (e.g. {y[0]!r}) but task='regression' needs numbers; "
                "use task='multiclass' or 'binary', or a numeric target"
            )
        return y.astype(np.float32), None
    if numeric:  # sorted by value, so ids follow the numbers (2 before 10)
        classes, labels = np.unique(y.astype(np.float64), return_inverse=True)
        names = tuple(class_name(c) for c in classes)
    else:
        classes, labels = np.unique(y.astype(str), return_inverse=True)
        names = tuple(str(c) for c in classes)
    if class_names is not None:
        labels, names = _ids_into(names, labels, class_names, what), class_names
    elif task == "binary" and len(names) != 2:
        raise ValueError(f"task='binary' needs exactly 2 classes in {what}; found {len(names)}")
    elif len(names) < 2:
        raise ValueError(f"{what} has a single value ({names[0]!r}) in {len(y)} rows; there is "
                         "nothing to learn: a classifier needs at least 2 classes")
    labels = np.asarray(labels).reshape(-1).astype(np.float32 if task == "binary" else np.int64)
    return labels, names


def _ids_into(names, labels, class_names, what) -> np.ndarray:
    """Labels (ids into `names`) as ids into the training `class_names`."""
    unseen = [n for n in names if n not in class_names]
    if unseen:
        raise ValueError(f"{what} holds the class(es) {list_names(unseen)} never seen in "
                         f"training; the training classes are: {list_names(class_names, 20)}")
    index = {n: i for i, n in enumerate(class_names)}
    return np.array([index[names[i]] for i in labels], dtype=np.int64)


def is_numeric(y: np.ndarray) -> bool:
    """True for numeric labels."""
    # bool labels are not: their classes are named 'False' and 'True', as the user wrote them
    return np.issubdtype(y.dtype, np.number)


def class_name(value: Any) -> str:
    """A numeric class's name: '3' for 3.0, '2.5' for 2.5."""
    value = float(value)
    return str(int(value)) if value.is_integer() else str(value)  # repr: distinct stay distinct


def target_scale(labels: np.ndarray, task: str) -> tuple[float, float] | None:
    """(mean, std) of a regression target; None for classes."""
    if task != "regression":
        return None
    mean = float(np.mean(labels, dtype=np.float64))
    std = float(np.std(labels, dtype=np.float64))
    # A constant target (std 0), or a spread below float32's resolution of the mean,
    # would blow the scaled labels up: leave the scale alone then.
    return mean, std if std > 1e-6 * abs(mean) and std > 0 else 1.0


def class_weights(class_weight, task, class_names, what) -> np.ndarray | None:
    """Weight per class id, from `{class name or id: weight}`; unnamed classes weigh 1."""
    if not class_weight:
        return None
    if task == "regression":
        raise ValueError(f"class_weight needs classes, but the task is regression ({what!r} is "
                         "a quantity); use sample_weight=<a column of per-row weights>, "
                         "or task='multiclass'")
    whole_names = all(re.fullmatch(r"-?\d+", name) for name in class_names)
    table = np.ones(len(class_names), np.float32)
    for key, weight in class_weight.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)) or not (
                math.isfinite(weight) and weight >= 0):
            raise ValueError(f"class_weight[{key!r}] must be a number >= 0; got {weight!r}")
        table[_class_index(key, class_names, whole_names)] = weight
    return table


def _class_index(key: Any, class_names: tuple[str, ...], whole_names: bool) -> int:
    classes = f"the classes are: {list_names(class_names, 20)}"
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and not whole_names:
        if 0 <= key < len(class_names):
            return int(key)
        raise ValueError(f"class_weight key {key!r} is not a class id (0..{len(class_names) - 1})"
                         f" nor a class name; {classes}")
    name = class_name(key) if isinstance(key, (int, np.integer, float)) else str(key)
    if isinstance(key, (str, int, np.integer, float)) and name in class_names:
        return class_names.index(name)
    raise ValueError(f"class_weight has no class {key!r}{did_you_mean(name, class_names)}; "
                     f"{classes}")


def row_weights(w: np.ndarray | None, per_class: np.ndarray | None,
                labels: np.ndarray) -> np.ndarray | None:
    """Per-row float32 weights: the row's sample weight times its class's weight."""
    if w is None and per_class is None:
        return None
    weights = np.ones(len(labels), np.float32) if w is None else w.astype(np.float32)
    if per_class is not None:
        weights = weights * per_class[labels.astype(np.int64)]
    return weights


def units(task: str, class_names) -> int:
    """The model's output units: one per class for multiclass, else 1."""
    return len(class_names) if task == "multiclass" else 1
