"""A parameter-server cluster inside one process, training a recipe (run by test_distribute).

One worker and one ps task are ``tf.distribute.Server`` instances on free
loopback ports; this process is the chief. It runs in a subprocess of the test
so that the servers and the strategy never touch the pytest process.

Usage: python _ps_in_process.py RUN_DIR KEY=VALUE...   (prints the eval metrics as JSON)
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

import trainkit  # noqa: E402
from trainkit.launch import free_ports  # noqa: E402


def main(run_dir: str, overrides: list[str]) -> None:
    chief, worker, ps = (f"127.0.0.1:{p}" for p in free_ports(3))
    cluster = {"chief": [chief], "worker": [worker], "ps": [ps]}
    spec = tf.train.ClusterSpec(cluster)
    servers = [
        tf.distribute.Server(spec, job_name=job, task_index=0, protocol="grpc", start=True) for job in ("worker", "ps")
    ]
    os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})
    recipe = trainkit.load_recipe("digits_mlp", overrides=["runtime.strategy=parameter_server", *overrides])
    run = trainkit.train(recipe, run_dir=run_dir)
    print("METRICS " + json.dumps(run.metrics), flush=True)
    del servers


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
