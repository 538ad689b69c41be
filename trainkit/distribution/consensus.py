"""Decisions every worker of a synchronous cluster takes together.

Every worker of ``multi_worker_mirrored`` runs the same loop in lock step, so
anything that involves a collective (reading a metric, saving a checkpoint,
the number of steps in a call) must happen on all of them in the same order.
Decisions a worker takes from its own clock or its own signals are therefore
agreed on first (:class:`Consensus`).
"""

from __future__ import annotations

from trainkit.distribution.cluster import is_multi_worker, num_workers, role
from trainkit.errors import ConfigError


class Consensus:
    """Decisions all workers of a synchronous cluster must take together.

    On one process every method returns its arguments. Under
    ``multi_worker_mirrored`` one small all-reduce per call makes the workers
    agree: a flag is set if any worker set it (one worker's SIGTERM stops all of
    them at the same step, with a checkpoint), and a number is the chief's
    (steps per call are timed on each worker but must be the same everywhere).
    """

    def __init__(self, strategy):
        self.strategy = strategy
        self.active = is_multi_worker(strategy)
        self._fn = None

    def agree(self, *, chief_value: int, flags: tuple[bool, ...]) -> tuple[int, tuple[bool, ...]]:
        """``(the chief's value, each flag or-ed over workers)``."""
        if not self.active:
            return chief_value, tuple(bool(f) for f in flags)
        is_chief = role(self.strategy).is_chief
        values = [chief_value if is_chief else 0, *(1 if f else 0 for f in flags)]
        total = self._sum(values)
        return int(total[0]), tuple(t > 0 for t in total[1:])

    def same_everywhere(self, value: int) -> bool:
        """True when every worker passed the same ``value``."""
        if not self.active:
            return True
        n = num_workers(self.strategy)
        total = self._sum([value, value * value])
        return total[0] == n * value and total[1] == n * value * value

    def _sum(self, values: list[int]) -> list[int]:
        import tensorflow as tf

        strategy = self.strategy
        if self._fn is None:
            local = max(1, strategy.num_replicas_in_sync // num_workers(strategy))

            @tf.function
            def reduce_sum(v):
                per_replica = strategy.run(lambda: tf.identity(v))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None) / local

            self._fn = reduce_sum
        out = self._fn(tf.constant(values, tf.float64)).numpy()
        return [int(round(x)) for x in out]


def check_same_start(strategy, step: int) -> None:
    """All workers must resume from the same step: the run directory must be shared."""
    if not Consensus(strategy).same_everywhere(step):
        raise ConfigError(
            f"the workers found different checkpoints to resume from (this one: step {step}); "
            "the run directory must be on storage every worker reads (a shared volume or a bucket)"
        )
