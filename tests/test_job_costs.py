"""The whole job's fixed costs: evaluation built once, phases timed, slow options said."""

from __future__ import annotations

import json
import logging

import pytest

import trainkit

QUIET = {"trainer.progress": False}


def recipe(name="digits_mlp", **overrides):
    return trainkit.load_recipe(name, overrides={**QUIET, **overrides})


@pytest.mark.parametrize("strategy", ["one_device", "mirrored"])
def test_validation_and_final_evaluation_share_one_traced_function(tmp_path, strategy):
    devices = {"runtime.cpu_devices": 2} if strategy == "mirrored" else {}
    run = trainkit.train(
        recipe(**{"trainer.epochs": 3, "trainer.validation.every_steps": 20, "runtime.strategy": strategy, **devices}),
        run_dir=tmp_path / "run",
    )
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    validations = [e for e in events if e["split"] == "validation"]
    assert len(validations) >= 6  # every 20 steps and every epoch end
    trainer, data = run._built.trainer, run._built.data
    # Every validation, the final evaluations and the calls below: one trace.
    first = run.evaluate("validation")
    assert run.evaluate("validation") == first
    run.evaluate("train")
    assert trainer.eval_traces == 1
    # Each evaluation reads its split exactly once, as a pipeline built afresh does.
    fresh = trainer.evaluate(run._built.strategy.experimental_distribute_dataset(data.dataset("validation")))
    assert fresh == pytest.approx(first, rel=1e-6)
    assert run.metrics["validation"] == pytest.approx(first, rel=1e-6)
    assert validations[-1]["loss"] == pytest.approx(first["loss"], rel=1e-6)


def test_no_retracing_warning_across_trainings_in_one_process(tmp_path):
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        for seed in range(3):
            run = trainkit.train(recipe(**{"trainer.epochs": 4, "seed": seed}), run_dir=tmp_path / f"run{seed}")
            run.evaluate("test")
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if "retracing" in r]
    assert run._built.trainer.eval_traces == 1


def test_run_json_breaks_the_job_into_phases(tmp_path):
    from conftest import run_cli

    run_dir = tmp_path / "run"
    done = run_cli("train", "digits_mlp", "-c", "digits_mlp_smoke", "trainer.checkpoint.every_epoch=true", "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr[-2000:]
    status = json.loads((run_dir / "run.json").read_text())
    phases = status["phases"]
    assert list(phases) == [
        "start_up", "build", "first_step", "training", "validation", "checkpoint_saves", "final_evaluation", "export", "total",
    ]
    assert all(seconds > 0 for seconds in phases.values())
    # start-up counts from the process's start: at least the import of TensorFlow
    assert phases["start_up"] > 0.5
    assert phases["total"] == pytest.approx(sum(v for k, v in phases.items() if k != "total"), abs=0.01)
    assert phases["checkpoint_saves"] == pytest.approx(status["checkpoint_seconds"], abs=0.01)
