"""Which models to serve: sources, version policies, labels, and the config file parser.

The config file is TF Serving's ``--model_config_file`` text-proto, the subset::

    model_config_list {
      config {
        name: "half_plus_two"
        base_path: "/models/half_plus_two"
        model_platform: "tensorflow"                  # accepted, ignored
        model_version_policy { specific { versions: 123 versions: 124 } }
        # or: model_version_policy { all {} }
        # or: model_version_policy { latest { num_versions: 2 } }
        version_labels { key: "stable" value: 123 }
      }
    }

A file ending in ``.json`` may hold the same structure as JSON instead:
``{"model_config_list": {"config": [{"name": ..., "base_path": ...,
"model_version_policy": {"specific": {"versions": [123]}}, "version_labels": {"stable": 123}}]}}``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from collections.abc import Iterable
from typing import Any


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's ``model_version_policy``: which versions on disk to serve.

    Attributes:
        kind: ``"latest"`` (default, the newest ``num_versions``), ``"all"``, or
            ``"specific"`` (exactly ``versions``).
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("latest", "all", "specific"):
            raise ValueError(
                f"model_version_policy must be latest, all or specific, got {self.kind!r}"
            )
        if self.kind == "latest" and self.num_versions < 1:
            raise ValueError(f"latest.num_versions must be >= 1, got {self.num_versions}")

    def select(self, available: Iterable[int]) -> set[int]:
        """Returns the versions among ``available`` this policy wants served."""
        available = sorted(set(available))
        if self.kind == "all":
            return set(available)
        if self.kind == "specific":
            return set(available) & set(self.versions)
        return set(available[-self.num_versions :])


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """One served model: its name, where its version folders live, and how to pick them."""

    name: str
    base_path: pathlib.Path
    policy: VersionPolicy = VersionPolicy()
    labels: tuple[tuple[str, int], ...] = ()

    def label_version(self, label: str) -> int | None:
        """The version a label points to, or None."""
        return dict(self.labels).get(label)


def load_model_config(path: str | pathlib.Path) -> list[ModelSource]:
    """Reads a model config file (text-proto, or JSON when the name ends in .json).

    Relative ``base_path`` values are taken relative to the file's folder.

    Raises:
        ValueError: The file does not parse or names an unknown field.
    """
    path = pathlib.Path(path)
    text = path.read_text()
    try:
        tree = json.loads(text) if path.suffix == ".json" else _parse_text_proto(text)
    except ValueError as exc:
        raise ValueError(f"Invalid protobuf file: '{path}': {exc}") from None
    return _sources(tree, path.parent)


def _sources(tree: dict[str, Any], root: pathlib.Path) -> list[ModelSource]:
    configs = _as_list(tree.get("model_config_list", {}).get("config", []))
    sources = []
    for config in configs:
        unknown = set(config) - {
            "name", "base_path", "model_platform", "model_version_policy", "version_labels"
        }
        if unknown:
            raise ValueError(f"unsupported model config field(s): {sorted(unknown)}")
        if not config.get("name") or not config.get("base_path"):
            raise ValueError("each config needs a name and a base_path")
        sources.append(
            ModelSource(
                name=str(config["name"]),
                base_path=root / pathlib.Path(str(config["base_path"])),
                policy=_policy(config.get("model_version_policy", {})),
                labels=_labels(config.get("version_labels", [])),
            )
        )
    return sources


def _policy(node: dict[str, Any]) -> VersionPolicy:
    if not node:
        return VersionPolicy()
    (kind, body), *rest = node.items()
    if rest:
        raise ValueError("model_version_policy takes exactly one of latest, all, specific")
    body = body or {}
    return VersionPolicy(
        kind=kind,
        num_versions=int(body.get("num_versions", 1)) if kind == "latest" else 1,
        versions=tuple(int(v) for v in _as_list(body.get("versions", []))),
    )


def _labels(node: Any) -> tuple[tuple[str, int], ...]:
    if isinstance(node, dict) and "key" not in node:  # JSON form: {"stable": 123}
        return tuple((str(k), int(v)) for k, v in node.items())
    return tuple((str(e["key"]), int(e["value"])) for e in _as_list(node))


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


_TOKEN = re.compile(
    r"""\s*(?:\#[^\n]*\n?\s*)*(?:(?P<brace>[{}])|(?P<colon>:)|(?P<name>[A-Za-z_][\w.]*)"""
    r"""|(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<number>[-+]?[\d.]+(?:[eE][-+]?\d+)?))"""
)


def _parse_text_proto(text: str) -> dict[str, Any]:
    """Parses protobuf text format into nested dicts; repeated fields become lists."""
    tokens = _tokenize(text)
    tree, position = _parse_message(tokens, 0)
    if position != len(tokens):
        raise ValueError(f"unexpected {tokens[position][1]!r}")
    return tree


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ValueError(f"cannot parse near {text[position:position + 20]!r}")
        position = match.end()
        kind = match.lastgroup
        if kind:
            tokens.append((kind, match.group(kind)))
        elif text[position:].strip() == "":
            break
    return tokens


def _parse_message(tokens: list[tuple[str, str]], i: int) -> tuple[dict[str, Any], int]:
    message: dict[str, Any] = {}
    while i < len(tokens) and tokens[i] != ("brace", "}"):
        kind, field = tokens[i]
        if kind != "name":
            raise ValueError(f"expected a field name, got {field!r}")
        i += 1
        if i < len(tokens) and tokens[i][0] == "colon":
            i += 1
        if i >= len(tokens):
            raise ValueError(f"field {field!r} has no value")
        kind, token = tokens[i]
        if token == "{":
            value, i = _parse_message(tokens, i + 1)
            if i >= len(tokens):
                raise ValueError(f"unclosed {{ after {field!r}")
            i += 1
        elif kind == "string":
            value, i = token[1:-1].encode().decode("unicode_escape"), i + 1
        elif kind == "number":
            value, i = (float(token) if "." in token or "e" in token.lower() else int(token)), i + 1
        elif kind == "name":
            value, i = token, i + 1
        else:
            raise ValueError(f"unexpected {token!r} after {field!r}")
        if field in message:
            message[field] = _as_list(message[field]) + [value]
        else:
            message[field] = value
    return message, i
