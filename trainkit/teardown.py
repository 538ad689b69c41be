"""Letting go of TensorFlow objects whose destruction blocks, and ending the process.

Destroying a tf.data iterator that autotunes waits for the autotuner's thread to
wake from its sleep, and that sleep doubles from 10 ms to a minute (TF 2.21: the
iterator's cancellation does not always wake it; measured 3.5 s at the end of
half the runs of ``digits_cnn``). So trainkit drops its training iterator on a
background thread and goes on (evaluation, export), and the command line ends
its process without waiting for that thread. This module imports no TensorFlow.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import NoReturn

from trainkit import compat

_started: list[threading.Thread] = []


def release_in_background(owner: list) -> threading.Thread:
    """Empty ``owner`` on another thread, so that what only it holds is destroyed there.

    Not a daemon thread: an interpreter that shuts down normally waits for it. A
    daemon thread still inside TensorFlow's destructor at exit is unwound by force
    through C++ frames that swallow the unwind, and the process aborts ("FATAL:
    exception not rethrown", exit -6) after the run has finished.
    """
    thread = threading.Thread(target=owner.clear, name="trainkit-release", daemon=False)
    _started[:] = pending()
    _started.append(thread)
    thread.start()
    return thread


def pending() -> list[threading.Thread]:
    """The releases still running."""
    return [thread for thread in _started if thread.is_alive()]


def exit_process(code: int) -> NoReturn:
    """End this process with ``code``, without the interpreter's teardown.

    The exit handlers run and the standard streams are flushed (everything
    trainkit writes is closed by then), and the process ends without the
    interpreter's teardown: that would wait for a pending release, and even
    with none it destroys every TensorFlow object one by one, which took 2-10 s
    after a small run here (more than the training of digits_mlp). A task of a
    cluster (``TF_CONFIG`` set) always shuts down normally: the other tasks wait
    for it to leave.
    """
    if os.environ.get("TF_CONFIG"):
        sys.exit(code)
    compat.run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing more to say
            pass
    os._exit(code)
