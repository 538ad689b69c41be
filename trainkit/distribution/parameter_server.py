"""A parameter-server cluster's worker and ps tasks: serve until the chief is gone.

Worker and ps tasks run no training loop of their own: the chief's
``ClusterCoordinator`` sends them work (:mod:`trainkit.training.coordinated`).
"""

from __future__ import annotations

import os
import time

from trainkit.console import say
from trainkit.distribution.cluster import cluster_info, reachable
from trainkit.recipe import RuntimeSection

#: How long a parameter-server or worker task keeps serving once its chief is
#: unreachable, before it concludes that the job is over and exits.
CHIEF_GONE_SECONDS = 10.0


def serve_if_server_task(runtime: RuntimeSection) -> bool:
    """On a parameter-server cluster's worker or ps task: serve until the chief is gone.

    Returns False (at once) on every other process. Worker and ps tasks run no
    loop of their own: the chief's coordinator sends them work. They exit once
    the chief has been unreachable for :data:`CHIEF_GONE_SECONDS`, so a job
    (a Kubernetes Indexed Job, ``trainkit launch``) ends when its chief does.
    """
    if runtime.strategy != "parameter_server":
        return False
    info = cluster_info()
    if info is None or info.task_type not in ("worker", "ps"):
        return False
    import tensorflow as tf

    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    server = tf.distribute.Server(
        tf.train.ClusterSpec(info.cluster), job_name=info.task_type, task_index=info.task_id, protocol="grpc", start=True
    )
    say(f"{info.name} serving at {info.address} for the parameter-server chief")
    chief = info.cluster["chief"][0]
    host, _, port = chief.rpartition(":")
    seen, gone_since = False, None
    while True:
        time.sleep(1.0)
        if reachable(host, int(port), timeout=1.0):
            seen, gone_since = True, None
        elif seen:
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since >= CHIEF_GONE_SECONDS:
                say(f"{info.name}: the chief at {chief} is gone; stopping")
                del server
                return True
