"""Distribution, by job: :mod:`~trainkit.distribution.cluster` (TF_CONFIG, roles),
:mod:`~trainkit.distribution.strategies` (one ``make_strategy``),
:mod:`~trainkit.distribution.parameter_server` (a server task's loop) and
:mod:`~trainkit.distribution.consensus` (what the workers agree on)."""
