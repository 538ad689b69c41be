"""TensorFlow imported without its C++ start-up chatter (layer 0: the recipe
loader imports a recipe file that may import Keras, below the runtime)."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator

#: TensorFlow's C++ start-up lines (absl log format), e.g. ``I0000 00:00:17.. port.cc:153] oneDNN ...``
#: and ``E0000 ... failed call to cuInit``.
_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} \d\d:\d\d:\d\d"
    r"|To enable the following instructions: .* rebuild TensorFlow)"  # (the line after cpu_feature_guard's)
)


_devices_listed = False


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter off the user's terminal and notebook.

    TensorFlow 2.21 logs through absl before its logging is initialised, so
    ``TF_CPP_MIN_LOG_LEVEL`` does not silence those lines (measured); they are
    filtered out of the import instead (:func:`startup_noise_filtered`). Where
    TensorFlow was imported by someone else (``import keras`` in a notebook), the
    first listing of the devices, which loads the platforms (CUDA's "failed call
    to cuInit" on a machine without a GPU), is still filtered here.
    """
    global _devices_listed
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if _devices_listed:
        return
    with startup_noise_filtered(even_if_imported=True):
        import tensorflow as tf

        # Listing the devices loads the platforms without starting the runtime,
        # which would fix the logical devices too early.
        tf.config.list_physical_devices()
    _devices_listed = True


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, its module run inside :func:`startup_noise_filtered`."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with startup_noise_filtered(even_if_imported=True):
            self._loader.exec_module(module)

    def __getattr__(self, name: str):  # get_resource_reader, is_package, ...: the real loader's
        return getattr(self._loader, name)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` the usual way, with a loader that keeps its start-up lines
    off stderr: whoever imports it after trainkit (``import keras``, ``import
    tensorflow`` in a notebook cell) gets a quiet import."""

    def __init__(self):
        self._finding = False

    def find_spec(self, name, path, target=None):
        if name != "tensorflow" or self._finding or "tensorflow" in sys.modules:
            return None
        self._finding = True
        try:
            spec = importlib.machinery.PathFinder.find_spec(name, path)
        finally:
            self._finding = False
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def filter_tensorflow_import() -> None:
    """From now on, a first ``import tensorflow`` by anyone is quiet (called by ``import trainkit``)."""
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


@contextlib.contextmanager
def startup_noise_filtered(*, even_if_imported: bool = False) -> Iterator[None]:
    """Run a block that may import TensorFlow with its start-up lines kept off stderr.

    They are written to file descriptor 2 by C++ code: the block runs with that
    descriptor pointed at a temporary file, and every other line written there
    (a real error) is passed on to stderr afterwards. Nothing to do once
    TensorFlow is imported (unless ``even_if_imported``: the block loads its platforms).
    """
    if "tensorflow" in sys.modules and not even_if_imported:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not _STARTUP_NOISE.match(line):
                    sys.stderr.write(line)
