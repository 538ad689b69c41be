"""Notebook and interactive use: the example notebook, live displays, interrupts, re-runnable cells, hygiene."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, checkout_env, run_cli

import trainkit

QUIET = {"trainer.progress": False}
TINY = {**QUIET, "model.hidden_units": [16], "trainer.evaluate": ["test"]}


def recipe(**overrides):
    return trainkit.load_recipe("digits_mlp", overrides={**TINY, **overrides})


@pytest.mark.slow
def test_the_quickstart_notebook_runs_offline_and_shows_what_it_says(tmp_path, monkeypatch):
    import nbclient
    import nbformat

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # trainkit itself must keep the noise out
    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    cells = [c for c in notebook.cells if c.cell_type == "code"]

    def text(cell) -> str:
        parts = []
        for out in cell.outputs:
            parts.append(out.get("text", ""))
            parts.extend(str(v) for v in out.get("data", {}).values())
        return "\n".join(parts)

    everything = "\n".join(text(c) for c in cells)
    assert not re.search(r"I0000|cuInit|absl::InitializeLog", everything)
    # (The last cell's trainkit.predict is left out: Keras's predict function retraces per model.)
    assert "retracing" not in "\n".join(text(c) for c in cells[:-1])
    train_cell, plot_cell, compare_cell, eval_cell, predict_cell = cells[1], cells[2], cells[3], cells[4], cells[5]
    # One live display, one for the run's lines, and the cell's value: not one output per epoch.
    assert len(train_cell.outputs) <= 3
    assert "100%" in text(train_cell) and "epoch 3/3" in text(train_cell)
    assert "image/png" in plot_cell.outputs[0]["data"]
    assert "model.hidden_units" in compare_cell.outputs[-1]["data"]["text/html"]
    assert "completed 3 epochs" in text(eval_cell)
    accuracy = float(re.search(r"batch accuracy: ([0-9.]+)", text(predict_cell)).group(1))
    assert accuracy > 0.5


def test_a_terminal_gets_one_progress_line(tmp_path):
    args = ["train", "digits_mlp", "-c", "digits_mlp_smoke", "trainer.progress=true", "model.hidden_units=[16]",
            "trainer.epochs=1", "trainer.log_every_steps=5", "trainer.evaluate=[test]"]
    env = checkout_env(quiet=False)
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))  # a 150-column terminal
    process = subprocess.Popen([sys.executable, "-m", "trainkit.cli", *args, "--run-dir", "tty"],
                               stdout=terminal, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:  # the other end closed
            break
        if not data:
            break
        chunks.append(data)
    assert process.wait(timeout=300) == 0, process.stderr.read()
    shown = b"".join(chunks).decode()
    assert "\r" in shown and "45/45" in shown  # the bar redrawn in place up to the last step
    assert "step 5/45" not in shown  # no log line per log event (plain output, not a terminal, has them)
    training, next_steps = shown.split("next:\r\n")  # then the commands to run next
    assert len([line for line in training.split("\n") if line.strip()]) <= 8  # header, bar, summary, results
    assert len([line for line in next_steps.split("\n") if line.strip()]) == 4


def test_sigint_in_process_raises_interrupted_with_its_checkpoint_and_the_next_train_resumes(tmp_path):
    slow = recipe(**{"trainer.epochs": 30, "trainer.steps_per_execution": 1})
    started = threading.Event()

    class Started(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            started.set()

    sender = threading.Thread(target=lambda: started.wait(120) and os.kill(os.getpid(), signal.SIGINT))
    sender.start()
    with pytest.raises(trainkit.Interrupted) as stopped:
        trainkit.train(slow, run_dir=tmp_path / "run", callbacks=[Started()])
    sender.join()
    assert isinstance(stopped.value, KeyboardInterrupt) and stopped.value.exit_code == 130
    assert os.path.isfile(f"{stopped.value.checkpoint}.index")
    assert stopped.value.run.status == "interrupted"
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "interrupted" and status["ended"]
    assert stopped.value.step < 90  # stopped at the first step boundary after the signal
    # A shorter budget is an allowed change: the next train() resumes and finishes.
    finished = trainkit.train(recipe(**{"trainer.epochs": 2}), run_dir=tmp_path / "run")
    assert finished.status == "completed" and len(finished.history["loss"]) == 2


def test_a_training_in_a_background_thread_stops_on_request_stop(tmp_path):
    outcome = {}

    def train():
        try:
            trainkit.train(recipe(**{"trainer.epochs": 50, "trainer.steps_per_execution": 1}), run_dir=tmp_path / "run")
        except BaseException as err:  # noqa: BLE001 (the test inspects what the thread raised)
            outcome["raised"] = err

    thread = threading.Thread(target=train)
    thread.start()
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "metrics.jsonl").is_file() or not (tmp_path / "run" / "metrics.jsonl").read_text():
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    assert trainkit.request_stop() == 1
    thread.join(120)
    assert isinstance(outcome.get("raised"), trainkit.Interrupted)
    assert os.path.isfile(f"{outcome['raised'].checkpoint}.index")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"


def test_registering_again_from_the_same_module_replaces_and_from_another_is_refused():
    def builder(*, input_shape, num_outputs):
        return None

    first = trainkit.register_model("nb_tiny_test")(builder)
    assert trainkit.register_model("nb_tiny_test")(lambda **kw: None) is not first  # a re-run cell: replaced

    other = type(builder)(builder.__code__, {}, "builder")
    other.__module__ = "somewhere_else"
    with pytest.raises(trainkit.ConfigError, match=r"'nb_tiny_test' is already registered by tests?\.?.*somewhere_else"):
        trainkit.register_model("nb_tiny_test")(other)


RECIPE_FILE = '''"""A recipe that registers its own model builder."""
import keras
import trainkit


@trainkit.register_model("nb_tiny_net")
def tiny_net(*, input_shape, num_outputs, width: int = 8):
    inputs = keras.Input(input_shape)
    x = keras.layers.Dense(width, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_outputs, activation="softmax")(x))


def recipe():
    return {
        "name": "nb_tiny",
        "data": {"source": {"type": "sklearn", "name": "digits"}, "scale": "standard", "batch_size": 64},
        "model": {"type": "nb_tiny_net"},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "trainer": {"epochs": 1, "progress": False, "evaluate": ["test"]},
    }
'''


def test_load_train_evaluate_and_load_again_in_one_process_leave_it_as_it_was(tmp_path):
    path = tmp_path / "nb_tiny.py"
    path.write_text(RECIPE_FILE)
    policy, custom = keras.mixed_precision.global_policy().name, dict(keras.saving.get_custom_objects())
    np.random.seed(7)
    tf.random.set_seed(5)
    numpy_state = np.random.get_state()[1].copy()
    first = trainkit.load_recipe(str(path))
    run = trainkit.train(trainkit.load_recipe(str(path)), run_dir=tmp_path / "run")
    assert trainkit.evaluate(tmp_path / "run", split="test") == pytest.approx(run.metrics["test"], rel=1e-5)
    again = trainkit.load_recipe(str(path))
    assert again.hash == first.hash
    mixed = trainkit.train(
        trainkit.load_recipe(str(path), overrides={"runtime.precision": "mixed_bfloat16", "runtime.deterministic": True}),
        run_dir=tmp_path / "mixed",
    )
    assert mixed.status == "completed"
    from trainkit.runtime import op_determinism_enabled

    assert keras.mixed_precision.global_policy().name == policy and not op_determinism_enabled()
    assert np.array_equal(np.random.get_state()[1], numpy_state)  # the recipe's seed did not stick
    from tensorflow.python.eager import context

    assert context.global_seed() == 5
    assert dict(keras.saving.get_custom_objects()).keys() - custom.keys() <= {k for k in keras.saving.get_custom_objects() if k.startswith("trainkit>")}

    # What a notebook does next with that deterministic bfloat16 run leaves the process as it was too.
    raw = next(iter(trainkit.dataset(mixed.recipe, "test", raw=True)))[0].numpy()[:4]
    for name, call in {
        "export": lambda: trainkit.export(tmp_path / "mixed", formats=["keras"], out_dir=tmp_path / "exported"),
        "predict": lambda: trainkit.predict(tmp_path / "mixed", raw),
        "evaluate": lambda: trainkit.evaluate(tmp_path / "mixed", split="test"),
        "restore": lambda: trainkit.restore(tmp_path / "mixed", "best"),
        "Run.model": lambda: trainkit.load_run(tmp_path / "mixed").model,
        "Run.predict": lambda: trainkit.load_run(tmp_path / "mixed").predict(raw),
    }.items():
        call()
        assert (keras.mixed_precision.global_policy().name, op_determinism_enabled()) == (policy, False), name
        assert context.global_seed() == 5, name


def test_quickstart_notebook_is_valid_and_cleared():
    notebook = json.loads((ROOT / "examples" / "quickstart.ipynb").read_text())
    assert all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code")


def test_a_quiet_run_of_a_recipe_file_that_imports_keras_prints_nothing_even_when_resuming(tmp_path):
    # The file imports keras (so TensorFlow) before trainkit can keep its start-up lines
    # out, the user's TF_CPP_MIN_LOG_LEVEL asks for every line, and the recipe says
    # progress: false: the resumed training prints nothing at all.
    path = tmp_path / "nb_quiet.py"
    path.write_text(RECIPE_FILE.replace("nb_tiny", "nb_quiet"))  # (its own builder name in this process)
    trainkit.train(trainkit.load_recipe(str(path)), run_dir=tmp_path / "run")  # one epoch
    again = run_cli("train", str(path), "trainer.epochs=2", "--run-dir", "run", env={"TF_CPP_MIN_LOG_LEVEL": "0"}, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["resumed_at"]
    assert again.stdout.strip() == ""  # nothing but errors, not even the command's closing line
    assert "resumed" not in again.stdout + again.stderr
    assert not re.search(r"I0000|cuInit|absl|oneDNN", again.stderr), again.stderr  # TensorFlow's start-up noise


NOISE = re.compile(r"I0000|E0000|cuInit|absl::InitializeLog|rebuild TensorFlow")


@pytest.mark.slow
@pytest.mark.parametrize("first_cell", ["import trainkit\nimport keras\nimport tensorflow as tf", "import keras\nimport tensorflow as tf\nimport trainkit"])
def test_a_notebook_importing_keras_after_or_before_trainkit_gets_no_tensorflow_start_up_lines(tmp_path, monkeypatch, first_cell):
    import nbclient
    import nbformat

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # trainkit itself must keep the noise out
    train = (
        "recipe = trainkit.load_recipe('digits_mlp', configs=['digits_mlp_smoke'], "
        "overrides={'trainer.epochs': None, 'trainer.steps': 3, 'trainer.progress': False})\n"
        "run = trainkit.train(recipe, run_dir='run')\n"
        "print(float(tf.reduce_sum(tf.ones(3))))"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(first_cell), nbformat.v4.new_code_cell(train)])
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = ["\n".join(out.get("text", "") for out in cell.outputs) for cell in notebook.cells]
    assert "3.0" in outputs[1] and not NOISE.search(outputs[1])  # the training cell: no cuInit line
    if first_cell.startswith("import trainkit"):  # (imported before trainkit, TensorFlow speaks before it can be kept quiet)
        assert not NOISE.search(outputs[0])
