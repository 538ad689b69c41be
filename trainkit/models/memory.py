"""Whether a model's parameters can be trained in the memory there is, checked before they
are allocated (a builder's model, a pretrained source's weights, LoRA's added kernels)."""

from __future__ import annotations

from trainkit.errors import ConfigError
from trainkit.runtime import available_memory

#: Bytes per parameter while training: the weight, its gradient and two optimizer
#: slots (Adam's moments), in float32. Activations come on top.
TRAINING_BYTES_PER_PARAMETER = 4 * 4


def check_parameters_fit(parameters: int, *, field: str, available: int | None = None) -> None:
    """Refuse, before they are allocated, ``parameters`` that could not be trained in the memory there is."""
    needed = parameters * TRAINING_BYTES_PER_PARAMETER
    available = available_memory() if available is None else available
    if available and needed > available:
        raise ConfigError(
            f"{field}: {parameters:,} parameters need about {_gib(needed)} to train (weights, gradients, "
            f"optimizer state), more than the {_gib(available)} of memory available; make the model smaller"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"
