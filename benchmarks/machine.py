"""What every benchmark records next to its figures: how busy the machine was, the date,
the command; and the rule that a figure taken on a busy machine is not published as
comparable.

"Busy" is measured without the benchmark itself. On two cores a TensorFlow benchmark
alone keeps the one-minute load average near 2, so that number cannot tell a quiet
machine from a busy one while it runs. Instead each timed span records the CPU time the
whole machine spent (``/proc/stat``) minus the CPU time of this process and of the
children it waited for (``getrusage``): the cores that *other* processes took over the
span. The load average when the command started is recorded too, before any of its
own work.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time

MAX_LOAD = 1.5
"""Above this one-minute load average at the command's start, no figure is comparable."""

MAX_OTHERS = 0.5
"""Above this many cores taken by other processes during a span, its figure is not comparable."""

SETTLE_LOAD = 1.0
"""A benchmark started above :data:`MAX_LOAD` first waits for the load average to fall to this."""

SETTLE_SECONDS = float(os.environ.get("TRAINKIT_BENCH_SETTLE_SECONDS", "240"))
"""How long it waits at most (0: not at all)."""


def _settled_load() -> float:
    """The one-minute load average once it has settled.

    The average trails by about a minute: a benchmark run right after another (as
    ``make bench`` runs them) starts above the limit on an idle machine, carrying its
    predecessor's load. So it waits, up to :data:`SETTLE_SECONDS`, for the load to
    fall to :data:`SETTLE_LOAD`; a machine that stays busy stays above it, and its
    figures are marked not comparable.
    """
    start = time.monotonic()
    load = os.getloadavg()[0]
    if load > MAX_LOAD:
        print(f"waiting up to {SETTLE_SECONDS:.0f} s for the load average ({load:.2f}) to fall to {SETTLE_LOAD}",
              file=sys.stderr, flush=True)
        while load > SETTLE_LOAD and time.monotonic() - start < SETTLE_SECONDS:
            time.sleep(5)
            load = os.getloadavg()[0]
    return load


START_LOAD = os.getloadavg()[0]
"""The one-minute load average when the benchmark started (settled by :func:`settle`)."""

_settled = False


def settle() -> None:
    """Before the first timed span: wait for the load average to settle, and take it as
    :data:`START_LOAD`. Called by :class:`Others`; a benchmark's ``--worker`` processes
    and ``--quick`` checks (run by the tests, under their load) never wait."""
    global START_LOAD, _settled
    if _settled:
        return
    _settled = True
    if SETTLE_SECONDS > 0 and not {"--worker", "--quick"} & set(sys.argv):
        START_LOAD = _settled_load()


_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal; idle and iowait are not busy


def load() -> float:
    """The one-minute load average now (it counts the benchmark's own threads too)."""
    return os.getloadavg()[0]


def _machine_cpu_seconds() -> float:
    """CPU seconds all processes of the machine have used since boot; 0 where /proc is missing."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return 0.0
    return sum(int(fields[i]) for i in _BUSY_FIELDS if i < len(fields)) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds used by this process and by the children it has waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class Others:
    """A span over which the cores taken by other processes are measured::

        with Others() as others:
            subprocess.run(...)          # waited for: its CPU counts as the benchmark's own
        result["loads"] = [others.cores]
    """

    cores: float = 0.0

    def __enter__(self) -> Others:
        settle()
        self._start = (time.monotonic(), _machine_cpu_seconds(), _own_cpu_seconds())
        return self

    def __exit__(self, *exc: object) -> None:
        wall, machine, own = (now - then for now, then in zip(
            (time.monotonic(), _machine_cpu_seconds(), _own_cpu_seconds()), self._start, strict=True))
        # Clock ticks are coarse (10 ms): a short span can come out slightly negative.
        self.cores = max(0.0, (machine - own) / wall) if wall > 0 else 0.0


def comparable(loads: list[float]) -> bool:
    return bool(loads) and START_LOAD <= MAX_LOAD and max(loads) <= MAX_OTHERS


def _why_not(loads: list[float]) -> str:
    if START_LOAD > MAX_LOAD:
        return f"load {START_LOAD:.1f} > {MAX_LOAD} at start"
    if not loads:
        return "busyness not recorded"
    return f"other processes took {max(loads):.2f} cores > {MAX_OTHERS}"


def spread(values: list[float], fmt: str = ".2f") -> str:
    """``median (min..max)``."""
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}..{max(values):{fmt}})"


def ratio(value: float, loads: list[float], fmt: str = ".2f") -> str:
    """A ratio as published: the number, or "not comparable" when the machine was busy."""
    if comparable(loads):
        return f"{value:{fmt}}x"
    return f"not comparable ({_why_not(loads)})"


def provenance(loads: list[float]) -> str:
    """One line saying where the figures come from: command, date (UTC), how busy the machine was."""
    command = "python " + " ".join(sys.argv)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    seen = f"{min(loads):.2f}..{max(loads):.2f} cores" if loads else "not recorded"
    verdict = "" if comparable(loads) else f" **Not comparable ({_why_not(loads)}): rerun on an idle machine.**"
    return (f"Command: `{command}`; {when}; one-minute load average at the start {START_LOAD:.2f}; "
            f"CPU taken by other processes during each timed run {seen} (of {os.cpu_count()}).{verdict}")


def verdict(met: bool, loads: list[float]) -> str:
    """Whether a goal was met, or "not comparable" when the machine was busy."""
    return ("yes" if met else "no") if comparable(loads) else "not comparable"
