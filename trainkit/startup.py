"""TensorFlow imported without its C++ start-up chatter (layer 0: the recipe
loader imports a recipe file that may import Keras, below the runtime)."""

from __future__ import annotations

import contextlib
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


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter off the user's terminal and notebook.

    TensorFlow 2.21 logs through absl before its logging is initialised, so
    ``TF_CPP_MIN_LOG_LEVEL`` does not silence those lines (measured); they are
    filtered out of the import instead (:func:`startup_noise_filtered`).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    with startup_noise_filtered():
        import tensorflow as tf

        # Looking for devices loads the platforms (CUDA's "failed call to cuInit"
        # on a machine without a GPU) without starting the runtime, which would
        # fix the logical devices too early.
        tf.config.list_physical_devices()


@contextlib.contextmanager
def startup_noise_filtered() -> Iterator[None]:
    """Run a block that may import TensorFlow with its start-up lines kept off stderr.

    They are written to file descriptor 2 by C++ code: the block runs with that
    descriptor pointed at a temporary file, and every other line written there
    (a real error) is passed on to stderr afterwards. Nothing to do once
    TensorFlow is imported.
    """
    if "tensorflow" in sys.modules:
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
