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
        "start_up", "build", "checks", "first_step", "training", "validation", "checkpoint_saves", "final_evaluation", "export", "total",
    ]
    assert all(seconds > 0 for seconds in phases.values())
    # start-up counts from the process's start: at least the import of TensorFlow
    assert phases["start_up"] > 0.5
    assert phases["total"] == pytest.approx(sum(v for k, v in phases.items() if k != "total"), abs=0.01)
    assert phases["checkpoint_saves"] == pytest.approx(status["checkpoint_seconds"], abs=0.01)


def test_input_wait_hint_never_proposes_a_larger_batch():
    from trainkit.data.pipeline import prepare
    from trainkit.training.input_wait import InputWait

    r = recipe("digits_cnn")
    plain = prepare(r.data, seed=r.seed)
    # A tiny step waiting only for the handover of a ready batch (0.2 ms): not the pipeline,
    # nothing to change, nothing said.
    assert InputWait(fraction=0.4, step_seconds=0.0005, compute_seconds=0.0003, steps=100).hint(plain) is None
    # In memory with nothing to apply per example, a longer wait is still the handover.
    assert InputWait(fraction=0.8, step_seconds=0.010, compute_seconds=0.002, steps=100).hint(plain) is None
    # A pipeline with per-example work (8 ms a step waiting): fixes that keep the results first,
    # the one that changes them said to, and never a larger batch.
    mapped = recipe("digits_cnn", **{"data.augment": [{"type": "random_flip", "mode": "horizontal"}], "data.parallel_calls": 1})
    slow = InputWait(fraction=0.8, step_seconds=0.010, compute_seconds=0.002, steps=100).hint(prepare(mapped.data, seed=0))
    assert slow.startswith("input is the bottleneck: let tf.data pick the parallelism (data.parallel_calls: auto)")
    assert "(results unchanged)" in slow and "the results, change" in slow and "batch_size" not in slow
    assert InputWait(fraction=0.05, step_seconds=0.01, compute_seconds=0.0095, steps=100).hint(plain) is None


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_precision_runs_head_computes_in_float32(tmp_path, precision):
    import keras
    import numpy as np

    run = trainkit.train(recipe(**{"runtime.precision": precision, "trainer.epochs": None, "trainer.steps": 2}), run_dir=tmp_path / "run")
    assert run.model.get_layer("output").dtype_policy.compute_dtype == "float32"
    probabilities = run.predict(np.random.default_rng(0).random((5, 64))).probabilities
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)  # a bfloat16 softmax was 0.992..1.008
    assert keras.models.load_model(tmp_path / "run" / "model.keras").outputs[0].dtype == "float32"


@pytest.mark.slow  # float16 is emulated on a CPU: ~10 s idle, 25 s under load
def test_mixed_float16_scales_the_loss_warns_on_cpu_and_resumes_exactly(tmp_path, capsys):
    import keras

    common = {
        "runtime.precision": "mixed_float16",
        "runtime.deterministic": True,
        "model.dropout": 0.0,
        "trainer.epochs": None,
        "trainer.validation.every_epochs": None,
        "trainer.evaluate": [],
    }
    try:
        whole = trainkit.train(recipe(**common, **{"trainer.steps": 8}), run_dir=tmp_path / "whole")
        assert "runtime.precision=mixed_float16 on a CPU: a small CNN trained about 150x slower" in capsys.readouterr().err
        optimizer = whole._built.trainer.optimizer
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        hidden, head = whole.model.layers[1:-1], whole.model.get_layer(index=-1)
        assert hidden and all(layer.compute_dtype == "float16" for layer in hidden if layer.weights)
        assert head.compute_dtype == "float32"  # the head, as Keras advises (builders.output_layer)
        # The loss was scaled and the steps applied: the optimizer moved the weights.
        assert int(optimizer.iterations) == 8 and float(optimizer.dynamic_scale) > 1
        trainkit.train(recipe(**common, **{"trainer.steps": 4}), run_dir=tmp_path / "split")
        resumed = trainkit.train(recipe(**common, **{"trainer.steps": 8}), run_dir=tmp_path / "split")
    finally:
        keras.mixed_precision.set_global_policy("float32")  # the policy is process-wide
    assert float(resumed._built.trainer.optimizer.dynamic_scale) == float(optimizer.dynamic_scale)
    for a, b in zip(whole.model.get_weights(), resumed.model.get_weights(), strict=True):
        assert a.tobytes() == b.tobytes()
    loaded = keras.models.load_model(tmp_path / "whole" / "model.keras")
    assert loaded.count_params() == whole.model.count_params()
