"""Which layers train: ``model.freeze``, a stage's ``unfreeze`` and ``optimizer.groups``.

Every pattern is a regular expression searched in layer names (``freeze``,
``unfreeze``) or in variable paths such as ``conv_0/kernel`` (``groups``), and
every pattern must match something: a pattern that matches nothing is almost
always a typo, and training with it would silently train the wrong layers.
Freezing sets ``layer.trainable = False``, so a frozen BatchNormalization runs
in inference mode (Keras semantics) and its variables get no gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from trainkit.errors import ConfigError
from trainkit.patterns import compile_pattern, search


def layers_of(model) -> list[Any]:
    """The model's layers, nested models' layers after them (depth first)."""
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(layers_of(layer))
    return out


def _names(model) -> str:
    names = [layer.name for layer in layers_of(model)]
    shown = ", ".join(names[:40])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 40 else "")


def matching_layers(model, patterns: Sequence[str], *, field: str) -> list[Any]:
    """Layers whose name one of ``patterns`` finds; each pattern must find one."""
    layers = layers_of(model)
    found: list[Any] = []
    for i, pattern in enumerate(patterns):
        regex = compile_pattern(pattern, f"{field}.{i}")
        hits = [layer for layer in layers if search(regex, layer.name, f"{field}.{i}")]
        if not hits:
            raise ConfigError(f"{field}.{i}: '{pattern}' matches no layer of the model; its layers: {_names(model)}")
        found.extend(hit for hit in hits if hit not in found)
    return found


def _set_trainable(layer, value: bool) -> None:
    # Nested layers too, one by one: a KerasHub backbone loaded from a .keras
    # file did not pass its own flag down (its variables stayed trainable).
    for each in [layer, *layers_of(layer)] if hasattr(layer, "layers") else [layer]:
        each.trainable = value


def freeze(model, patterns: Sequence[str], *, field: str = "model.freeze") -> list[str]:
    """Freeze the layers ``patterns`` match; returns their names."""
    layers = matching_layers(model, patterns, field=field)
    for layer in layers:
        _set_trainable(layer, False)
    return [layer.name for layer in layers]


def unfreeze(model, which: str | Sequence[str], *, field: str) -> None:
    """Make layers trainable again: ``"all"`` or those the patterns match."""
    if which == "all":
        _set_trainable(model, True)
        return
    for layer in matching_layers(model, which, field=field):
        _set_trainable(layer, True)


def check_patterns(model, patterns: Sequence[str], *, field: str) -> None:
    """Raise now, before training, if a pattern a later stage uses matches no layer."""
    matching_layers(model, patterns, field=field)


def group_of_variables(model, variables: Sequence[Any], groups: Sequence[Any]) -> list[int | None]:
    """For each variable, the index of the ``optimizer.groups`` entry its path matches
    (``None``: no group). Every group must match, and no variable may match two."""
    regexes = [compile_pattern(g.match, f"optimizer.groups.{i}.match") for i, g in enumerate(groups)]
    out: list[int | None] = []
    used = set()
    for variable in variables:
        hits = [i for i, regex in enumerate(regexes) if search(regex, variable.path, f"optimizer.groups.{i}.match")]
        if len(hits) > 1:
            a, b = hits[:2]
            raise ConfigError(
                f"optimizer.groups: the variable {variable.path} matches both group {a} ('{groups[a].match}') "
                f"and group {b} ('{groups[b].match}'); each variable may be in one group only"
            )
        out.append(hits[0] if hits else None)
        used.update(hits)
    for i, group in enumerate(groups):
        if i not in used:
            paths = ", ".join(v.path for v in variables[:30])
            raise ConfigError(
                f"optimizer.groups.{i}.match: '{group.match}' matches no trainable variable; "
                f"the variables: {paths}; the layers: {_names(model)}"
            )
    return out


def summary(model, variables: Sequence[Any], groups: Sequence[Any], group_index: Sequence[int | None]) -> dict[str, Any]:
    """What trains and how fast: for ``trainkit validate``."""
    import numpy as np

    def count(vs) -> int:
        return int(sum(np.prod(v.shape) for v in vs))

    frozen: list[str] = []

    def outermost_frozen(parent) -> None:  # a frozen backbone is one name, not its hundred layers
        for layer in parent.layers:
            if not layer.trainable and layer.weights:
                frozen.append(layer.name)
            elif hasattr(layer, "layers"):
                outermost_frozen(layer)

    outermost_frozen(model)
    trainable = {id(v) for v in model.trainable_variables}
    per_variable = {}
    for variable, index in zip(variables, group_index, strict=True):
        if id(variable) not in trainable:
            continue
        multiplier = 1.0 if index is None else groups[index].learning_rate_multiplier
        per_variable[variable.path] = f"group {index} (x{multiplier:g})" if index is not None else "x1"
    return {
        "frozen_layers": frozen,
        "trainable_parameters": count(model.trainable_variables),
        "total_parameters": count(model.weights),
        "learning_rate": per_variable,
    }


def enable_lora(model, rank: int) -> None:
    """LoRA of ``rank`` on the model's KerasHub backbone (``model.lora_rank``), its size checked first."""
    backbones = [layer for layer in [model, *layers_of(model)] if hasattr(layer, "enable_lora") and hasattr(layer, "layers")]
    if not backbones:
        raise ConfigError(
            "model.lora_rank: the model has no KerasHub backbone to put LoRA on (no layer with enable_lora); "
            "use a KerasHub preset as model.source"
        )
    _check_lora_size(backbones[0], rank)
    backbones[0].enable_lora(rank)


def _check_lora_size(backbone, rank: int) -> None:
    """Refuse, before anything is allocated, a rank beyond the adapted kernels or beyond memory."""
    from trainkit.compat import all_sublayers
    from trainkit.models.memory import check_parameters_fit

    targets = set(backbone.default_lora_layer_names())
    kernels = [layer.kernel.shape for layer in all_sublayers(backbone) if layer.name in targets and hasattr(layer, "kernel")]
    if not kernels:
        return
    smallest = min(min(int(math.prod(shape[:-1])), int(shape[-1])) for shape in kernels)
    if rank > smallest:
        raise ConfigError(
            f"model.lora_rank: {rank:,} is larger than the kernels LoRA adapts (their smallest side is {smallest}); "
            f"a low-rank update has a rank below that (typically 4-64)"
        )
    added = sum(rank * (int(math.prod(shape[:-1])) + int(shape[-1])) for shape in kernels)
    check_parameters_fit(int(backbone.count_params()) + added, field="model.lora_rank")

def merge_lora(adapted, plain) -> None:
    """Give ``plain`` (the same architecture built without LoRA) the weights ``adapted``
    computes with: each adapted kernel is its frozen kernel plus its low-rank update.

    A run trained with ``model.lora_rank`` and used as a fine-tuning source becomes
    an ordinary model this way, which the new run may freeze, adapt again or train
    as a whole. (Loading its checkpoint into a model without LoRA would silently
    drop the update.)
    """
    from trainkit.compat import all_sublayers

    effective = {}
    for layer in all_sublayers(adapted):
        if getattr(layer, "lora_enabled", False):
            for name in ("kernel", "embeddings"):  # Dense / EinsumDense, Embedding
                if hasattr(layer, name):
                    effective[f"{layer.path}/{name}"] = getattr(layer, name)
    values = {v.path: v for v in adapted.weights if "lora_kernel" not in v.path}
    targets = {v.path: v for v in plain.weights}
    if set(values) != set(targets):
        missing = sorted(set(values) ^ set(targets))[:3]
        raise ConfigError(f"the LoRA run's weights do not match its architecture without LoRA (e.g. {missing})")
    for path, variable in targets.items():
        variable.assign(effective.get(path, values[path]))
