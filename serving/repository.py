"""Watches the model repository: loads new versions, swaps them in atomically, unloads old ones."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib
import threading
from collections.abc import Callable, Iterator

from serving.errors import InvalidArgument, NotFound, client_message, code_name
from serving.model_config import ModelSource
from serving.servable import Servable

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """One line of TF Serving's ``model_version_status``."""

    version: int
    state: str  # "AVAILABLE", or "END" for a version that failed to load
    error_code: str = "OK"
    error_message: str = ""


@dataclasses.dataclass(frozen=True)
class _Failure:
    mtime: float  # a failed folder is retried only once it changes
    error_code: str
    error_message: str


@dataclasses.dataclass(frozen=True)
class _Model:
    """An immutable snapshot of one model; polling replaces it, never mutates it."""

    source: ModelSource
    servables: dict[int, Servable]
    failures: dict[int, _Failure]
    problem: str = ""  # why no version was found, as a client may read it; "" when one was


def version_folders(base_path: pathlib.Path) -> dict[int, pathlib.Path]:
    """Integer-named sub-folders of a model's base path (others, like ``.tmp-*``, are ignored)."""
    folders = {}
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(base_path):
            # ASCII digits only: "²".isdigit() is True, and int("²") would stop the poll.
            if entry.name.isascii() and entry.name.isdigit() and entry.is_dir():
                folders[int(entry.name)] = pathlib.Path(entry.path)
    return folders


class ModelRepository:
    """The set of served models and versions, kept in step with the file system.

    A poll loads every version the policy wants that is not loaded yet, fully,
    before publishing a new snapshot in a single assignment, so a request sees
    either the old set of versions or the new one. A version that fails to load
    is recorded (and shown by ``status``) but never published; versions dropped
    from a snapshot close once their in-flight requests finish.

    Args:
        discover: Returns the model sources to serve; called on every poll, so a
            repository folder can gain models.
        poll_seconds: Seconds between polls; 0 or less polls only when asked.
        loader: Builds a servable from ``(path, version)``; tests may swap it.
    """

    def __init__(
        self,
        discover: Callable[[], list[ModelSource]],
        poll_seconds: float = 1.0,
        loader: Callable[[pathlib.Path, int], Servable] = Servable,
    ) -> None:
        self._discover = discover
        self._poll_seconds = poll_seconds
        self._loader = loader
        self._models: dict[str, _Model] = {}
        self._notices: dict[str, str] = {}  # what was last logged about each problem
        self._poll_lock = threading.Lock()  # one poll at a time
        self.polls = 0  # polls finished so far, failed ones too
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """Brings the served versions in line with the repository, once."""
        with self._poll_lock:
            try:
                self._poll()
            finally:
                self.polls += 1

    def _poll(self) -> None:
        try:
            sources = {source.name: source for source in self._discover()}
        except OSError as exc:
            # The served models stay as they are: a repository folder that is briefly
            # missing (a remount, a redeploy) must not unload them.
            self._notice("repository", logging.ERROR, f"Cannot list the model repository: {exc}")
            return
        self._notice("repository", logging.WARNING, "" if sources else _NO_MODELS)
        models = {}
        for name, source in sources.items():
            models[name] = self._update(self._models.get(name), source)
        for name in self._models.keys() - models.keys():
            self._notice(f"model {name}", logging.WARNING, "")
        dropped = [m for n, m in self._models.items() if n not in models]
        old = self._models
        self._models = models  # the atomic swap
        for model in dropped:
            for servable in model.servables.values():
                servable.retire()
        for name, model in models.items():
            previous = old.get(name)
            if previous is not None:
                for version, servable in previous.servables.items():
                    if model.servables.get(version) is not servable:
                        servable.retire()

    def _update(self, model: _Model | None, source: ModelSource) -> _Model:
        servables = dict(model.servables) if model else {}
        failures = dict(model.failures) if model else {}
        on_disk = version_folders(source.base_path)
        failures = {v: f for v, f in failures.items() if v in on_disk}
        for version, failure in list(failures.items()):
            if _mtime(on_disk[version]) != failure.mtime:
                del failures[version]  # the folder changed: give it another try
        while True:
            wanted = source.policy.select(v for v in on_disk if v not in failures)
            to_load = sorted(wanted - servables.keys())
            if not to_load:
                break
            for version in to_load:
                try:
                    servables[version] = self._loader(on_disk[version], version)
                except Exception as exc:  # noqa: BLE001 - any load failure must not stop serving
                    failures[version] = _failure(on_disk[version], exc, source.name)
                    # Once per folder state: a failed folder is retried only when it changes.
                    logger.error(
                        "Failed to load %s version %d from %s: %s",
                        source.name, version, on_disk[version],
                        getattr(exc, "message", None) or exc,
                    )
                else:
                    logger.info("Loaded %s version %d", source.name, version)
        kept = {v: s for v, s in servables.items() if v in wanted}
        problem, log_text = ("", "") if kept or failures else _no_versions(source, on_disk)
        self._notice(f"model {source.name}", logging.WARNING, log_text)
        return _Model(source, kept, failures, problem)

    def _notice(self, key: str, level: int, text: str) -> None:
        """Logs ``text`` once while it stays the same for ``key``; "" means all is well again.

        A poll that finds the same problem as the last one stays quiet; a different
        problem, or the same one after it went away, is logged again.
        """
        if not text:
            self._notices.pop(key, None)
        elif self._notices.get(key) != text:
            self._notices[key] = text
            logger.log(level, "%s", text)

    def start(self) -> None:
        """Starts polling in a daemon thread (no-op when ``poll_seconds`` <= 0)."""
        if self._poll_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the polling thread and waits for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                self.poll()
            except Exception as exc:  # a poll must never kill the watcher
                text = f"Model repository poll failed: {type(exc).__name__}: {exc}"
                if self._notices.get("poll") != text:  # its stack once, not on every poll
                    self._notices["poll"] = text
                    logger.exception("%s", text)
            else:
                self._notices.pop("poll", None)

    def base_paths(self) -> list[pathlib.Path]:
        """Where the configured models' version folders live (never shown to clients)."""
        return [model.source.base_path for model in self._models.values()]

    def names(self) -> list[str]:
        """Names of the configured models."""
        return sorted(self._models)

    def has(self, name: str) -> bool:
        """Whether ``name`` is a configured model (no list built: asked on every request)."""
        return name in self._models

    def ready(self) -> bool:
        """Whether there is a model to serve and every configured model serves a version.

        False with no models at all (an empty repository folder) and while any
        configured model has no loaded version (none found, or all failed to load).
        """
        models = self._models
        return bool(models) and all(model.servables for model in models.values())

    @contextlib.contextmanager
    def servable(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> Iterator[Servable]:
        """Holds a loaded version for the length of a request.

        Args:
            name: Model name.
            version: A specific version; None for the latest (or ``label``'s).
            label: A version label from the model config.

        Raises:
            NotFound: No such model or version is being served.
            InvalidArgument: Unknown label.
        """
        for _ in range(3):  # a swap between lookup and acquire is rare; just look again
            servable = self._find(name, version, label)
            if servable.acquire():
                break
        else:
            raise NotFound(f"Servable not found for request: {_request_text(name, version)}")
        try:
            yield servable
        finally:
            servable.release()

    def _find(self, name: str, version: int | None, label: str | None) -> Servable:
        model = self._models.get(name)
        if label is not None:
            version = model.source.label_version(label) if model else None
            if version is None:
                raise InvalidArgument(f"Unrecognized servable version label: {label}")
        if model is not None and model.servables:
            if version is None:
                return model.servables[max(model.servables)]
            if version in model.servables:
                return model.servables[version]
        raise NotFound(f"Servable not found for request: {_request_text(name, version)}")

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """TF Serving's ``GetModelStatus``: loaded versions, and versions that failed.

        Raises:
            NotFound: Unknown model or version.
        """
        model = self._models.get(name)
        states = []
        if model is not None:
            states = [VersionStatus(v, "AVAILABLE") for v in model.servables]
            states += [
                VersionStatus(v, "END", f.error_code, f.error_message)
                for v, f in model.failures.items()
            ]
        if version is not None:
            states = [s for s in states if s.version == version]
            if not states:
                raise NotFound(f"Could not find version {version} of model {name}")
        if not states:
            reason = f": {model.problem}" if model is not None and model.problem else ""
            raise NotFound(f"Could not find any versions of model {name}{reason}")
        return sorted(states, key=lambda s: s.version, reverse=True)

    def label_version(self, name: str, label: str) -> int:
        """The version a label names.

        Raises:
            InvalidArgument: The model has no such label.
        """
        model = self._models.get(name)
        version = model.source.label_version(label) if model else None
        if version is None:
            raise InvalidArgument(f"Unrecognized servable version label: {label}")
        return version


_NO_MODELS = (
    "No models to serve: the model repository has no model folders. A model is a "
    "sub-folder holding numbered version folders (models/NAME/1/saved_model.pb); export "
    "one with `tfkit train ... --export DIR` (or tfkit.export_model) into the folder "
    "given to --models"
)


def _no_versions(source: ModelSource, on_disk: dict[int, pathlib.Path]) -> tuple[str, str]:
    """Why a model has no version: for its status answer (no server paths) and the log."""
    name, base = source.name, source.base_path
    if not base.is_dir():
        return (
            "its base path does not exist on the server",
            f"Could not find base path {base} for servable {name}: no such folder",
        )
    if not on_disk:
        return (
            "no numbered version folder (e.g. 1/) under its base path",
            f"No versions of servable {name} found under base path {base}. Did you forget to "
            "name your leaf directory as a number (eg. '/1/')?",
        )
    # Only a "specific" policy selects none of the versions found.
    found = ", ".join(str(v) for v in sorted(on_disk))
    wanted = ", ".join(str(v) for v in sorted(source.policy.versions))
    return (
        f"its model_version_policy serves versions {wanted}, none of which is on disk",
        f"Versions {found} of servable {name} are under {base}, but its "
        f"model_version_policy serves only versions {wanted}",
    )


def _request_text(name: str, version: int | None) -> str:
    return f"Latest({name})" if version is None else f"Specific({name}, {version})"


def _mtime(path: pathlib.Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _failure(path: pathlib.Path, exc: Exception, name: str) -> _Failure:
    if hasattr(exc, "error_code"):  # a tf.errors.OpError
        code = code_name(exc.error_code)
    elif isinstance(exc, FileNotFoundError | OSError):
        code = "NOT_FOUND"
    else:
        code = "UNKNOWN"
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    # The status answer shows this message: name the version folder as the model
    # repository sees it ("half/00000123"), never by its place on the server's disk.
    for form in sorted({str(path.resolve()), str(path.absolute()), str(path)}, key=len,
                       reverse=True):
        message = message.replace(form, f"{name}/{path.name}")
    return _Failure(_mtime(path), code, client_message(message))
