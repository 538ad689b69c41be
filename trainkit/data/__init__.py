"""Input pipelines: sources to split arrays, arrays to ``tf.data`` pipelines."""

from trainkit.data.pipeline import DataInfo, PreparedData, prepare

__all__ = ["DataInfo", "PreparedData", "prepare"]
