"""Declarative transforms: a recipe's ``data.transforms`` / ``augment`` entries made
into functions ``(x, y, seed) -> (x, y)`` that run inside ``tf.data``.

``seed`` is a stateless seed (shape ``[2]``, int64) for random transforms, derived
from (recipe seed, epoch, example index); deterministic transforms ignore it.
Random transforms use TensorFlow's ``stateless_random_*`` ops only: the same
seed gives the same augmentation, so a resumed run sees exactly what an
uninterrupted one would have. Features that are a dict are transformed key by
key (random ones with the same seed for every key, so an image and its mask
are cropped alike).

A recipe adds its own transform with :func:`trainkit.register_transform`::

    @trainkit.register_transform("invert")
    def invert(x, y, *, top: float = 1.0):
        return top - x, y

A registered function that takes a ``seed`` argument is random (training-only:
it belongs in ``data.augment``) and receives the per-example stateless seed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainkit import registry
from trainkit.errors import ConfigError, TrainkitError, first_line, user_code_error

TransformFn = Callable[[Any, Any, Any], tuple[Any, Any]]


@dataclass
class Context:
    """What transforms need to know about the data."""

    num_classes: int | None = None
    statistics: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    """Normalization statistics by transform field name (``data.transforms.2``)."""


def is_random(spec: Any) -> bool:
    """Whether a transform spec draws random numbers (training-only)."""
    if not hasattr(spec, "kwargs"):  # a built-in transform
        return bool(spec.random)
    check(spec, field_name="data.transforms")
    fn = registry.transforms.get(spec.type)
    return "seed" in inspect.signature(fn).parameters


def check(spec: Any, *, field_name: str) -> None:
    """Resolve a registered transform's name and check its arguments (no TensorFlow)."""
    if not hasattr(spec, "kwargs"):
        return
    from trainkit.recipe import BUILTIN_TRANSFORMS

    try:
        fn = registry.transforms.get(spec.type, field=f"{field_name}.type")
    except ConfigError:
        from trainkit.errors import did_you_mean

        names = [*BUILTIN_TRANSFORMS, *registry.transforms.names()]
        raise ConfigError(f"{field_name}.type: unknown transform '{spec.type}'; {did_you_mean(spec.type, names)}") from None
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    for key in spec.kwargs:
        if key not in params and not takes_any or key in ("seed",):
            from trainkit.errors import did_you_mean

            valid = [p for p in params if p not in ("x", "y", "seed")]
            raise ConfigError(
                f"{field_name}.{key}: transform '{spec.type}' has no argument '{key}'; {did_you_mean(key, valid)}"
            )


def make(spec: Any, *, field_name: str, context: Context) -> TransformFn:
    """The function of one transform spec (built-in or registered)."""
    import tensorflow as tf

    kind = spec.type
    if hasattr(spec, "kwargs"):  # registered
        check(spec, field_name=field_name)
        fn = registry.transforms.get(kind)
        kwargs = spec.kwargs
        seeded = "seed" in inspect.signature(fn).parameters

        def registered(x, y, seed):
            out = fn(x, y, seed=seed, **kwargs) if seeded else fn(x, y, **kwargs)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise ConfigError(f"{field_name}: transform '{kind}' must return (x, y), got {type(out).__name__}")
            return out

        return _guarded(registered, field_name, kind)

    if kind == "scale":
        factor, offset = spec.factor, spec.offset
        return _features(lambda v, s: tf.cast(v, tf.float32) * factor + offset, field_name, kind)
    if kind == "normalize":
        if spec.mean is not None:
            mean, std = spec.mean, spec.std
        else:
            mean, std = context.statistics[field_name]
        mean_t = tf.constant(mean, tf.float32)
        std_t = tf.constant(std, tf.float32)
        if tf.reduce_any(std_t <= 0):
            raise ConfigError(f"{field_name}: std must be above 0, got {std}")
        return _features(lambda v, s: (tf.cast(v, tf.float32) - mean_t) / std_t, field_name, kind)
    if kind == "one_hot":
        depth = spec.num_classes or context.num_classes
        if not depth:
            raise ConfigError(f"{field_name}: one_hot needs class labels (set num_classes or data.num_classes)")
        return _guarded(lambda x, y, s: (x, tf.one_hot(tf.cast(y, tf.int32), depth)), field_name, kind)
    if kind == "cast":
        dtype = tf.as_dtype(spec.dtype)
        if spec.target == "label":
            return _guarded(lambda x, y, s: (x, tf.cast(y, dtype)), field_name, kind)
        return _features(lambda v, s: tf.cast(v, dtype), field_name, kind)
    if kind == "resize":
        size, method = list(spec.size), spec.method
        return _features(lambda v, s: tf.image.resize(v, size, method=method), field_name, kind)
    if kind == "center_crop":
        height, width = spec.size
        return _features(lambda v, s: tf.image.resize_with_crop_or_pad(v, height, width), field_name, kind)
    if kind == "reshape":
        shape = list(spec.shape)
        return _features(lambda v, s: tf.reshape(v, shape), field_name, kind)
    if kind == "rename":
        mapping = dict(spec.mapping)

        def rename(x, y, s):
            _need_dict(x, field_name, kind)
            _need_keys(x, mapping, field_name)
            return {mapping.get(k, k): v for k, v in x.items()}, y

        return _guarded(rename, field_name, kind)
    if kind == "select":
        keys = spec.keys

        def select(x, y, s):
            _need_dict(x, field_name, kind)
            _need_keys(x, [keys] if isinstance(keys, str) else keys, field_name)
            return (x[keys] if isinstance(keys, str) else {k: x[k] for k in keys}), y

        return _guarded(select, field_name, kind)
    if kind == "random_crop":
        height, width, pad = spec.size[0], spec.size[1], spec.padding

        def crop(v, seed):
            if pad:
                v = tf.pad(v, [[pad, pad], [pad, pad], [0, 0]])
            channels = tf.shape(v)[-1]
            out = tf.image.stateless_random_crop(v, tf.stack([height, width, channels]), seed=seed)
            out.set_shape([height, width, v.shape[-1]])
            return out

        return _features(crop, field_name, kind)
    if kind == "random_flip":
        mode = spec.mode

        def flip(v, seed):
            if mode in ("horizontal", "horizontal_and_vertical"):
                v = tf.image.stateless_random_flip_left_right(v, seed=seed)
            if mode in ("vertical", "horizontal_and_vertical"):
                other = tf.random.experimental.stateless_fold_in(seed, 1)
                v = tf.image.stateless_random_flip_up_down(v, seed=other)
            return v

        return _features(flip, field_name, kind)
    if kind == "random_brightness":
        delta = spec.max_delta
        return _features(
            lambda v, seed: tf.image.stateless_random_brightness(tf.cast(v, tf.float32), delta, seed=seed),
            field_name,
            kind,
        )
    if kind == "random_contrast":
        lower, upper = spec.lower, spec.upper
        return _features(
            lambda v, seed: tf.image.stateless_random_contrast(tf.cast(v, tf.float32), lower, upper, seed=seed),
            field_name,
            kind,
        )
    raise ConfigError(f"{field_name}: unknown transform '{kind}'")  # the schema prevents this


def _guarded(fn: TransformFn, field_name: str, kind: str) -> TransformFn:
    """Shape and type mistakes found while tracing become one ConfigError line."""

    def call(x, y, seed):
        try:
            return fn(x, y, seed)
        except TrainkitError:
            raise
        except (ValueError, TypeError, KeyError) as err:
            raise ConfigError(f"{field_name}: '{kind}' does not fit the data (features {_describe(x)}): {first_line(err)}") from None
        except Exception as err:  # a registered transform is user code: still one line
            raise user_code_error(err, f"{field_name}: transform '{kind}'") from None

    return call


def _features(fn: Callable[[Any, Any], Any], field_name: str, kind: str) -> TransformFn:
    def apply(x, y, seed):
        if isinstance(x, dict):
            return {k: fn(v, seed) for k, v in x.items()}, y
        return fn(x, seed), y

    return _guarded(apply, field_name, kind)


def _need_dict(x: Any, field_name: str, kind: str) -> None:
    if not isinstance(x, dict):
        raise ConfigError(f"{field_name}: '{kind}' needs features that are a dict of named tensors, got one tensor")


def _need_keys(x: dict, keys: Any, field_name: str) -> None:
    from trainkit.errors import did_you_mean

    for key in keys:
        if key not in x:
            raise ConfigError(f"{field_name}: no feature '{key}'; {did_you_mean(key, x)}")


def _describe(x: Any) -> str:
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in x.items()) + "}"
    shape = getattr(x, "shape", None)
    dtype = getattr(getattr(x, "dtype", None), "name", "")
    return f"{dtype}{list(shape) if shape is not None else ''}"


def chain(fns: list[TransformFn]) -> TransformFn:
    """Apply transforms in order; each random one gets its own seed derived from ``seed``."""
    import tensorflow as tf

    def apply(x, y, seed=None):
        for i, fn in enumerate(fns):
            sub = None if seed is None else tf.random.experimental.stateless_fold_in(seed, i)
            x, y = fn(x, y, sub)
        return x, y

    return apply
