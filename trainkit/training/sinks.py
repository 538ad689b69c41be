"""Where a run's words go: the one place trainkit writes to the console.

A sink receives what training has to say (a header, notices such as "resumed
from", progress after each compiled call, log lines, validations, epoch ends,
final results, warnings) and decides how to show it:

- :class:`PlainSink` -- one line per event, as in CI logs and files (stdout not a TTY);
- :class:`TerminalSink` -- a single tqdm progress line updated in place (stdout a TTY);
- :class:`NotebookSink` -- one live display in a Jupyter cell (progress, ETA, steps/s,
  latest training and validation metrics), then a small table of epochs;
- :class:`QuietSink` -- nothing but warnings on stderr (``trainer.progress: false``).

:func:`make_sink` picks one. Warnings go to stderr from every sink: a
corrupt checkpoint skipped or a NaN rolled back is never silent.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

# say and warn are the console's: training's modules and the launcher import them from here.
from trainkit.console import say as say
from trainkit.console import warn as warn
from trainkit.training.events import Position


def format_metrics(values: dict[str, float], prefix: str = "") -> str:
    return "  ".join(f"{prefix}{k} {v:.4g}" for k, v in values.items())


class Sink:
    """What training reports, and how; this base shows nothing but warnings."""

    def __init__(self) -> None:
        self.total_steps = 0
        self.epochs: int | None = None

    # -- lines ------------------------------------------------------------------
    def line(self, text: str) -> None:
        """A line of the run's story (the header, a best checkpoint, a final result)."""

    def notice(self, text: str) -> None:
        """Something a user must not miss about this run: resumed, finished, moved aside."""
        self.line(text)

    def warn(self, text: str) -> None:
        warn(text)

    # -- training -----------------------------------------------------------------
    def start(self, *, total_steps: int, epochs: int | None, position: Position) -> None:
        self.total_steps, self.epochs = total_steps, epochs

    def advance(self, position: Position) -> None:
        """After every compiled call: cheap, it runs on the training hot path."""

    def train_log(self, position: Position, values: dict[str, float], rate: float) -> None:
        """At each ``trainer.log_every_steps``."""

    def validation(self, position: Position, values: dict[str, float]) -> None:
        """A validation at a step interval (``val_``-prefixed values)."""

    def epoch_end(self, position: Position, logs: dict[str, float]) -> None:
        """The epoch's training metrics and, if it validated, its ``val_`` ones."""

    def finish(self) -> None:
        """Training is over (finished, stopped or failed)."""

    def result(self, split: str, values: dict[str, float]) -> None:
        """A final evaluation."""
        self.line(f"{split}: {format_metrics(values)}")


class QuietSink(Sink):
    """``trainer.progress: false``: warnings only."""


class NoticesOnlySink(Sink):
    """A non-chief worker of a cluster: the chief reports progress, each worker its own resume."""

    def notice(self, text: str) -> None:
        say(text)


class PlainSink(Sink):
    """One line per event on a stream (CI logs, files, pipes)."""

    def __init__(self, stream: TextIO | None = None):
        super().__init__()
        self.stream = stream

    def line(self, text: str) -> None:
        say(text, self.stream)

    def train_log(self, position: Position, values: dict[str, float], rate: float) -> None:
        of_epochs = f"/{self.epochs}" if self.epochs else ""
        self.line(
            f"step {position.step}/{self.total_steps}  epoch {position.epoch + 1}{of_epochs}  "
            f"{format_metrics(values)}  ({rate:.1f} steps/s)"
        )

    def validation(self, position: Position, values: dict[str, float]) -> None:
        self.line(f"  validation at step {position.step}: {format_metrics(values)}")

    def epoch_end(self, position: Position, logs: dict[str, float]) -> None:
        of_epochs = self.epochs or "?"
        self.line(f"epoch {position.epoch + 1}/{of_epochs}  {format_metrics(logs)}")


class _LiveSink(Sink):
    """A display redrawn in place: the latest metrics, progress, rate and ETA."""

    #: Redraws at most this often: a redraw costs far more than a compiled call's bookkeeping.
    MIN_INTERVAL = 0.2

    def __init__(self) -> None:
        super().__init__()
        self.train_values: dict[str, float] = {}
        self.val_values: dict[str, float] = {}
        self.epoch_rows: list[dict[str, Any]] = []
        self.position = Position()
        self._start_step = 0
        self._started = time.perf_counter()
        self._last_draw = 0.0

    def start(self, *, total_steps: int, epochs: int | None, position: Position) -> None:
        super().start(total_steps=total_steps, epochs=epochs, position=position)
        self.position, self._start_step = position, position.step
        self._started = time.perf_counter()
        self._draw(force=True)

    def advance(self, position: Position) -> None:
        self.position = position
        self._draw()

    def train_log(self, position: Position, values: dict[str, float], rate: float) -> None:
        self.train_values = dict(values)
        self.advance(position)

    def validation(self, position: Position, values: dict[str, float]) -> None:
        self.val_values = dict(values)
        self._draw(force=True)

    def epoch_end(self, position: Position, logs: dict[str, float]) -> None:
        self.train_values = {k: v for k, v in logs.items() if not k.startswith("val_")}
        self.val_values = {k: v for k, v in logs.items() if k.startswith("val_")} or self.val_values
        self.epoch_rows.append({"epoch": position.epoch + 1, **logs})
        self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self._last_draw >= self.MIN_INTERVAL:
            self._last_draw = now
            self.render()

    def render(self) -> None:
        raise NotImplementedError

    def meter(self) -> str:
        """tqdm's progress meter: bar, count, elapsed<ETA, steps/s, latest metrics."""
        from tqdm import tqdm

        elapsed = time.perf_counter() - self._started
        done = self.position.step - self._start_step
        epochs = f"epoch {self.position.epoch + 1}/{self.epochs}" if self.epochs else f"epoch {self.position.epoch + 1}"
        shown = {**self.train_values, **self.val_values}
        postfix = ", ".join([epochs, *(f"{k}={v:.4g}" for k, v in shown.items())])
        return tqdm.format_meter(
            self.position.step,
            self.total_steps,
            elapsed,
            ncols=None,
            unit="step",
            rate=done / elapsed if elapsed > 0 and done else None,
            initial=self._start_step,
            postfix=postfix,
        )


class TerminalSink(_LiveSink):
    """A single progress line on a terminal, redrawn by tqdm; log lines stay out of it."""

    def __init__(self, stream: TextIO | None = None):
        super().__init__()
        self.stream = stream or sys.stdout
        self._bar = None

    def line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)  # above the bar, which tqdm redraws
        else:
            say(text, self.stream)

    def start(self, *, total_steps: int, epochs: int | None, position: Position) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=total_steps, initial=position.step, unit="step", file=self.stream,
            dynamic_ncols=True, mininterval=self.MIN_INTERVAL, leave=True,
        )
        super().start(total_steps=total_steps, epochs=epochs, position=position)

    def render(self) -> None:
        bar = self._bar
        if bar is None:
            return
        bar.n = self.position.step
        epochs = f"{self.position.epoch + 1}/{self.epochs}" if self.epochs else str(self.position.epoch + 1)
        shown = {**self.train_values, **self.val_values}
        bar.set_postfix_str(", ".join([f"epoch {epochs}", *(f"{k}={v:.4g}" for k, v in shown.items())]), refresh=False)
        bar.refresh()

    def finish(self) -> None:
        if self._bar is not None:
            self.render()
            self._bar.close()
            self._bar = None
        if self.epoch_rows:
            last = self.epoch_rows[-1]
            self.line(f"epoch {last['epoch']}/{self.epochs or '?'}  {format_metrics(_metrics_of(last))}")


class NotebookSink(_LiveSink):
    """One live output in a Jupyter cell, updated in place through IPython's display protocol.

    (``tqdm.notebook`` needs ipywidgets, which a plain Jupyter install lacks; a
    display handle needs nothing beyond IPython.) Lines of the run's story
    (header, notices, final results) go to one more output, so a training cell
    holds a few outputs whatever its number of epochs.
    """

    def __init__(self) -> None:
        super().__init__()
        self._handle = None
        self._lines: list[str] = []
        self._lines_handle = None

    def line(self, text: str) -> None:
        from IPython.display import display

        self._lines.append(text)
        shown = _Text("\n".join(self._lines))
        if self._lines_handle is None:
            self._lines_handle = display(shown, display_id=True)
        else:
            self._lines_handle.update(shown)

    def render(self) -> None:
        from IPython.display import display

        shown = _Text(self.meter(), table=self.epoch_rows)
        if self._handle is None:
            self._handle = display(shown, display_id=True)
        else:
            self._handle.update(shown)

    def finish(self) -> None:
        self.render()


class _Text:
    """A display object: plain text for any front end, HTML (with an epoch table) for Jupyter."""

    MAX_ROWS = 12

    def __init__(self, text: str, table: list[dict[str, Any]] | None = None):
        self.text, self.table = text, table or []

    def _rows(self) -> list[dict[str, Any]]:
        rows = self.table
        if len(rows) > self.MAX_ROWS:  # the first epochs and the latest ones
            rows = [*rows[:3], {"epoch": "..."}, *rows[-(self.MAX_ROWS - 4):]]
        return rows

    def __repr__(self) -> str:
        lines = [self.text]
        for row in self._rows():
            lines.append(f"epoch {row['epoch']}  {format_metrics(_metrics_of(row))}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        out = [f"<pre>{html.escape(self.text)}</pre>"]
        rows = self._rows()
        if rows:
            keys = [k for k in rows[-1] if k != "epoch"]
            out.append("<table><tr><th>epoch</th>" + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>")
            for row in rows:
                cells = "".join(
                    f"<td>{row[k]:.4g}</td>" if isinstance(row.get(k), float) else f"<td>{row.get(k, '')}</td>" for k in keys
                )
                out.append(f"<tr><td>{row['epoch']}</td>{cells}</tr>")
            out.append("</table>")
        return "".join(out)


def _metrics_of(row: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in row.items() if k != "epoch" and isinstance(v, int | float)}


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython's ZMQ shell)."""
    shell_module = sys.modules.get("IPython")
    if shell_module is None:
        return False
    try:
        shell = shell_module.get_ipython()
    except AttributeError:
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def make_sink(progress: bool, *, chief: bool = True) -> Sink:
    """The sink for a run: quiet, a notebook display, a terminal line, or plain lines."""
    if not progress:
        return QuietSink()
    if not chief:
        return NoticesOnlySink()
    if in_notebook():
        return NotebookSink()
    if sys.stdout.isatty():
        return TerminalSink()
    return PlainSink()
