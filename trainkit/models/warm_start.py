"""``model.init``: a recipe's own architecture, started from another model's weights.

Every variable of the model whose path (``layer/name``) and shape match a
variable of the source is restored from it, except those ``skip`` names. The
report says what matched, what was skipped, what had another shape and what
the model has that the source lacks; ``strict: true`` refuses the last two.
Resuming a run restores its checkpoint instead: a resumed run never reads its
``init`` source's weights (resume beats init).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from trainkit.errors import ConfigError
from trainkit.models import pretrained
from trainkit.recipe import InitSection


def restore_matching(
    model, spec: InitSection, *, runs: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], pretrained.SourceUse]:
    """Copy matching variables from ``spec.source`` into ``model``; returns the report and the source.

    ``runs``: the models of sources that are run directories, restored by the plan."""
    source_model = pretrained.load_source(
        spec.source, checkpoint=spec.source_checkpoint, field="model.init.source", runs=runs
    )
    use = pretrained.SourceUse("model.init.source", spec.source, pretrained.digest(source_model), source_model)
    skips = []
    for i, pattern in enumerate(spec.skip):
        try:
            skips.append(re.compile(pattern))
        except re.error as err:
            raise ConfigError(f"model.init.skip.{i}: '{pattern}' is not a valid regular expression: {err}") from None
    available = {v.path: v for v in _weights(source_model)}
    report: dict[str, Any] = {"source": spec.source, "digest": use.digest, "matched": [], "skipped": [], "shape_mismatch": [], "missing": []}
    used_skips = set()
    for variable in _weights(model):
        path = variable.path
        hits = [i for i, regex in enumerate(skips) if regex.search(path)]
        if hits:
            used_skips.update(hits)
            report["skipped"].append(path)
            continue
        found = available.get(path)
        if found is None:
            report["missing"].append(path)
        elif tuple(found.shape) != tuple(variable.shape):
            report["shape_mismatch"].append({"variable": path, "model": list(variable.shape), "source": list(found.shape)})
        else:
            variable.assign(found.numpy())
            report["matched"].append(path)
    for i, pattern in enumerate(spec.skip):
        if i not in used_skips:
            names = ", ".join(v.path for v in model.weights[:30])
            raise ConfigError(f"model.init.skip.{i}: '{pattern}' matches no variable of the model; its variables: {names}")
    if spec.strict and (report["shape_mismatch"] or report["missing"]):
        first = (report["shape_mismatch"] or [{"variable": report["missing"][0]}])[0]["variable"]
        raise ConfigError(
            f"model.init: strict, but {len(report['shape_mismatch'])} variable(s) have another shape in {spec.source} "
            f"and {len(report['missing'])} are not in it (first: {first}); set model.init.strict: false or skip them"
        )
    if not report["matched"]:
        raise ConfigError(f"model.init.source: no variable of the model matches {spec.source} by layer name and shape")
    return report, use


def _weights(model) -> list:
    # Random-generator states (Dropout's) are not weights a source can lend.
    return [v for v in model.weights if "seed_generator" not in v.path]


def summary_line(report: dict[str, Any]) -> str:
    total = sum(len(report[k]) for k in ("matched", "skipped", "shape_mismatch", "missing"))
    return (
        f"model.init: restored {len(report['matched'])} of {total} variables from {report['source']} "
        f"(skipped {len(report['skipped'])}, other shape {len(report['shape_mismatch'])}, "
        f"not in the source {len(report['missing'])})"
    )
