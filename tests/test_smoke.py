"""The quickest end-to-end check: the default recipe's smoke variant trains via the CLI."""

import json

from conftest import cli


def test_digits_cnn_smoke_trains_and_writes_its_run_directory(tmp_path):
    result = cli("train", "digits_cnn", "-c", "digits_cnn_smoke", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    for name in ("config.yaml", "run.json", "metrics.jsonl", "eval.json", "model.keras"):
        assert (run / name).is_file(), name
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert set(json.loads((run / "eval.json").read_text())) == {"validation", "test"}
