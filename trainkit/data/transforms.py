"""Declarative transforms: a recipe's ``data.transforms`` / ``augment`` /
``eval_transforms`` entries made into :class:`Transform` objects, functions
``(x, y, seed) -> (x, y)`` that run inside ``tf.data``.

**Deterministic feature transforms are Keras preprocessing layers, defined once.**
``scale``, ``normalize``, ``cast`` (of the features, to float32), ``resize``,
``center_crop`` and ``reshape`` -- and ``data.scale`` and ``data.feature_shape`` --
each become a *step*: a JSON description of one fitted layer (``{"type":
"normalize", "field": "data.transforms.1", "mean": [...], "std": [...], ...}``).
:data:`LAYERS` makes the Keras layer of a step. The ``tf.data`` pipeline applies
that layer to every example, and the inference model (``trainkit.serving``) puts
the same layers, made from the same steps (recorded in ``inference.json``), in
front of the trained model: a transform cannot train one way and serve another.
A layer sees a batch (of one example in ``tf.data``) and computes in float32,
as it does in the inference model, whose input is cast to float32 first.

A transform that needs the training split (``normalize`` without ``mean``/``std``)
is *fitted* first (:data:`FITS`): it gets the training features as the transforms
before it leave them, and what it returns goes into its step. How to add a
transform of either kind: docs/data.md, "How to add a transform".

Random transforms (augmentation, training only) use TensorFlow's
``stateless_random_*`` ops with a stateless ``seed`` (shape ``[2]``, int64) derived
from (recipe seed, epoch, example index): the same seed gives the same
augmentation, so a resumed run sees exactly what an uninterrupted one would have.
Label-side transforms (``one_hot``, label casts) and the dict ones (``rename``,
``select``) are ``tf.data`` functions too; they never reach an inference model.
Features that are a dict are transformed key by key (random ones with the same
seed for every key, so an image and its mask are cropped alike).

A recipe adds its own transform with :func:`trainkit.register_transform`::

    @trainkit.register_transform("invert")
    def invert(x, y, *, top: float = 1.0):
        return top - x, y

A registered function that takes a ``seed`` argument is random (training-only:
it belongs in ``data.augment``) and receives the per-example stateless seed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainkit import registry
from trainkit.data import preset_text, text
from trainkit.errors import ConfigError, TrainkitError, first_line, user_code_error

TransformFn = Callable[[Any, Any, Any], tuple[Any, Any]]
Step = dict[str, Any]


@dataclass
class Context:
    """What transforms need to know about the data."""

    num_classes: int | None = None
    fitted: dict[str, Any] = field(default_factory=dict)
    """What each fitted transform learnt from the training split, by field name
    (``data.transforms.2``): ``normalize``'s ``(mean, std)``."""


@dataclass(frozen=True)
class Transform:
    """One transform made for ``tf.data``: call it as ``(x, y, seed) -> (x, y)``.

    ``step`` is the Keras layer it applies (a deterministic feature transform),
    else None. ``not_exported`` says why a transform without a layer keeps the
    inference model from being built (None: it has no part in inference, as a
    label transform or augmentation).
    """

    fn: TransformFn
    step: Step | None = None
    not_exported: str | None = None
    on_batches: TransformFn | None = None
    """The same transform applied to a whole batch at once (same values, example by
    example); None where it works one example at a time (random and registered ones)."""

    def __call__(self, x: Any, y: Any, seed: Any = None) -> tuple[Any, Any]:
        return self.fn(x, y, seed)


# ------------------------------------------------- deterministic feature layers


def _normalization(step: Step, rank: int, name: str):
    import keras

    mean, std = np.asarray(step["mean"], np.float32), np.asarray(step["std"], np.float32)
    if step["per"] == "element":  # data.scale: one statistic per feature value
        axis = tuple(range(1, rank + 1)) if rank > 1 else -1
        return keras.layers.Normalization(axis=axis, mean=mean, variance=np.square(std), name=name, dtype="float32")
    if mean.size == 1:  # one statistic for every value
        return keras.layers.Normalization(axis=None, mean=float(mean[0]), variance=float(std[0]) ** 2, name=name, dtype="float32")
    return keras.layers.Normalization(axis=-1, mean=mean, variance=np.square(std), name=name, dtype="float32")


def _rescaling(step: Step, rank: int, name: str):
    import keras

    return keras.layers.Rescaling(step.get("scale", 1.0), step.get("offset", 0.0), name=name, dtype="float32")


def _reshape(step: Step, rank: int, name: str):
    import keras

    return keras.layers.Reshape(tuple(step["shape"]), name=name, dtype="float32")


def _resizing(step: Step, rank: int, name: str):
    import keras

    height, width = step["size"]
    return keras.layers.Resizing(height, width, interpolation=step["method"], name=name, dtype="float32")


def _center_crop(step: Step, rank: int, name: str):
    import keras

    height, width = step["size"]
    return keras.layers.CenterCrop(height, width, name=name, dtype="float32")


#: The Keras layer of each step type: ``(step, rank of one example, layer name) -> layer``.
#: Stock layers only, so an exported ``model.keras`` loads with plain Keras.
LAYERS: dict[str, Callable[[Step, int, str], Any]] = {
    "normalize": _normalization,
    "rescale": _rescaling,
    "cast_float": _rescaling,  # Rescaling(1.0) casts to its float32 dtype
    "reshape": _reshape,
    "resize": _resizing,
    "center_crop": _center_crop,
    "vectorize": text.vectorize_layer,
    "wordpiece": text.wordpiece_layer,  # (KerasHub layers: model.keras loads where keras_hub is installed)
    "sentencepiece": text.sentencepiece_layer,
    "preset": preset_text.preset_layer,  # (a KerasHub preset's preprocessor: a dict of token ids and masks)
}


def _normalize_step(spec: Any, fitted: Any) -> Step:
    mean, std = (spec.mean, spec.std) if spec.mean is not None else fitted
    as_list = (lambda v: [float(x) for x in v]) if isinstance(mean, list) else (lambda v: [float(v)])
    return {"type": "normalize", "mean": as_list(mean), "std": as_list(std), "per": "channel"}


def _cast_step(spec: Any, fitted: Any) -> Step | None:
    return {"type": "cast_float"} if spec.target == "features" and spec.dtype == "float32" else None


#: The step of each deterministic recipe transform: ``(spec, fitted) -> step``, or
#: None where this use of it has no layer (a cast of the label, or to another dtype).
STEPS: dict[str, Callable[[Any, Any], Step | None]] = {
    "scale": lambda spec, fitted: {"type": "rescale", "scale": spec.factor, "offset": spec.offset},
    "normalize": _normalize_step,
    "cast": _cast_step,
    "resize": lambda spec, fitted: {"type": "resize", "size": list(spec.size), "method": spec.method},
    "center_crop": lambda spec, fitted: {"type": "center_crop", "size": list(spec.size)},
    "reshape": lambda spec, fitted: {"type": "reshape", "shape": list(spec.shape)},
}


def _fit_normalize(batches: Iterable[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel (last axis) mean and std of the training features."""
    total = total_sq = None
    count = 0
    for x in batches:
        x = np.asarray(x, np.float64)
        x = x.reshape(-1, x.shape[-1] if x.ndim > 1 else 1)
        total = x.sum(0) if total is None else total + x.sum(0)
        total_sq = (x**2).sum(0) if total_sq is None else total_sq + (x**2).sum(0)
        count += len(x)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0))
    std = np.where(std > 0, std, 1.0)
    return [float(v) for v in mean], [float(v) for v in std]


#: Transforms fitted on the training split: ``name -> (needs fitting?, fit)``;
#: ``fit`` takes the training features (NumPy batches, after the transforms before it).
FITS: dict[str, tuple[Callable[[Any], bool], Callable[[Iterable[np.ndarray]], Any]]] = {
    "normalize": (lambda spec: spec.mean is None, _fit_normalize),
}


def needs_fit(spec: Any) -> bool:
    """Whether a transform learns from the training split before it can be made."""
    entry = FITS.get(spec.type) if not hasattr(spec, "kwargs") else None
    return bool(entry and entry[0](spec))


def fit(spec: Any, batches: Iterable[np.ndarray]) -> Any:
    """What ``spec`` learns from the training features (see :data:`FITS`)."""
    return FITS[spec.type][1](batches)


def layer_step(spec: Any, *, field_name: str, fitted: Any = None) -> Step | None:
    """The step of a deterministic feature transform (None for any other)."""
    if hasattr(spec, "kwargs") or spec.type not in STEPS:
        return None
    step = STEPS[spec.type](spec, fitted)
    if step is None:
        return None
    if step["type"] == "normalize" and min(step["std"]) <= 0:
        raise ConfigError(f"{field_name}: std must be above 0, got {spec.std}")
    return {"type": step["type"], "field": field_name, **{k: v for k, v in step.items() if k != "type"}}


def preprocessing_layer(step: Step, *, rank: int, name: str):
    """The Keras layer of ``step``, for inputs whose examples have ``rank`` axes."""
    if step["type"] not in LAYERS:
        raise ConfigError(f"{step.get('field', 'preprocessing')}: unknown preprocessing step {step['type']!r}")
    return LAYERS[step["type"]](step, rank, name)


def from_step(step: Step, *, kind: str | None = None) -> Transform:
    """A :class:`Transform` that applies ``step``'s layer to each example's features
    (``kind``: the recipe's name of the transform, for error messages)."""
    import tensorflow as tf

    field_name = step.get("field", "preprocessing")
    name = "preprocess_" + "".join(c if c.isalnum() else "_" for c in field_name)
    layers: dict[tuple, Any] = {}

    def one(v, seed):
        if v.dtype not in (tf.float32, tf.string):  # as the inference model's input is
            v = tf.cast(v, tf.float32)
        batch = tf.expand_dims(v, 0)
        key = tuple(batch.shape)
        if key not in layers:
            with tf.init_scope():  # built eagerly: its constants then serve every traced pipeline
                layer = preprocessing_layer(step, rank=v.shape.rank, name=name)
                layer.build(batch.shape)
                layers[key] = layer
        return tf.nest.map_structure(lambda t: t[0], layers[key](batch))  # (a preset's preprocessor gives a dict)

    def whole(v, seed):
        if v.dtype not in (tf.float32, tf.string):
            v = tf.cast(v, tf.float32)
        key = ("batch", *v.shape[1:])
        if key not in layers:
            with tf.init_scope():
                layer = preprocessing_layer(step, rank=v.shape.rank - 1, name=name)
                layer.build(v.shape)
                layers[key] = layer
        return layers[key](v)

    kind = kind or step["type"]
    return Transform(_features(one, field_name, kind), step=step, on_batches=_features(whole, field_name, kind))


def exported_steps(chain: Iterable[Transform]) -> tuple[list[Step], str | None]:
    """The steps of the layers a chain applies, in order, and the first reason its
    transforms cannot all be put in an inference model (None: they can)."""
    steps, reason = [], None
    for transform in chain:
        if transform.step is not None:
            steps.append(transform.step)
        reason = reason or transform.not_exported
    return steps, reason


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


def make(spec: Any, *, field_name: str, context: Context) -> Transform:
    """The :class:`Transform` of one transform spec (built-in or registered)."""
    if hasattr(spec, "kwargs"):
        return _registered(spec, field_name)
    step = layer_step(spec, field_name=field_name, fitted=context.fitted.get(field_name))
    if step is not None:
        return from_step(step, kind=spec.type)
    return _FUNCTIONS[spec.type](spec, field_name, context)


def _registered(spec: Any, field_name: str) -> Transform:
    check(spec, field_name=field_name)
    kind, kwargs = spec.type, spec.kwargs
    fn = registry.transforms.get(kind)
    seeded = "seed" in inspect.signature(fn).parameters

    def registered(x, y, seed):
        out = fn(x, y, seed=seed, **kwargs) if seeded else fn(x, y, **kwargs)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ConfigError(f"{field_name}: transform '{kind}' must return (x, y), got {type(out).__name__}")
        return out

    reason = f"{field_name}: registered transform '{kind}' has no Keras layer to export it with"
    return Transform(_guarded(registered, field_name, kind), not_exported=reason)


def _one_hot(spec: Any, field_name: str, context: Context) -> Transform:
    import tensorflow as tf

    depth = spec.num_classes or context.num_classes
    if not depth:
        raise ConfigError(f"{field_name}: one_hot needs class labels (set num_classes or data.num_classes)")
    return _same_on_batches(_guarded(lambda x, y, s: (x, tf.one_hot(tf.cast(y, tf.int32), depth)), field_name, "one_hot"))


def _cast(spec: Any, field_name: str, context: Context) -> Transform:
    """A cast of the label, or of the features to a dtype other than float32 (that one is a layer)."""
    import tensorflow as tf

    dtype = tf.as_dtype(spec.dtype)
    if spec.target == "label":
        return _same_on_batches(_guarded(lambda x, y, s: (x, tf.cast(y, dtype)), field_name, "cast"))
    reason = f"{field_name}: a cast of the features to {spec.dtype} is not exported"
    fn = _features(lambda v, s: tf.cast(v, dtype), field_name, "cast")
    return Transform(fn, not_exported=reason, on_batches=fn)


def _rename(spec: Any, field_name: str, context: Context) -> Transform:
    mapping = dict(spec.mapping)

    def rename(x, y, s):
        _need_dict(x, field_name, "rename")
        _need_keys(x, mapping, field_name)
        return {mapping.get(k, k): v for k, v in x.items()}, y

    fn = _guarded(rename, field_name, "rename")  # picks keys: the same on a batch
    return Transform(fn, not_exported=f"{field_name}: transform 'rename' is not exported", on_batches=fn)


def _select(spec: Any, field_name: str, context: Context) -> Transform:
    keys = spec.keys

    def select(x, y, s):
        _need_dict(x, field_name, "select")
        _need_keys(x, [keys] if isinstance(keys, str) else keys, field_name)
        return (x[keys] if isinstance(keys, str) else {k: x[k] for k in keys}), y

    fn = _guarded(select, field_name, "select")  # picks keys: the same on a batch
    return Transform(fn, not_exported=f"{field_name}: transform 'select' is not exported", on_batches=fn)


def _random_crop(spec: Any, field_name: str, context: Context) -> Transform:
    import tensorflow as tf

    height, width, pad = spec.size[0], spec.size[1], spec.padding

    def crop(v, seed):
        if pad:
            v = tf.pad(v, [[pad, pad], [pad, pad], [0, 0]])
        channels = tf.shape(v)[-1]
        out = tf.image.stateless_random_crop(v, tf.stack([height, width, channels]), seed=seed)
        out.set_shape([height, width, v.shape[-1]])
        return out

    return Transform(_features(crop, field_name, "random_crop"))


def _random_flip(spec: Any, field_name: str, context: Context) -> Transform:
    import tensorflow as tf

    mode = spec.mode

    def flip(v, seed):
        if mode in ("horizontal", "horizontal_and_vertical"):
            v = tf.image.stateless_random_flip_left_right(v, seed=seed)
        if mode in ("vertical", "horizontal_and_vertical"):
            other = tf.random.experimental.stateless_fold_in(seed, 1)
            v = tf.image.stateless_random_flip_up_down(v, seed=other)
        return v

    return Transform(_features(flip, field_name, "random_flip"))


def _random_brightness(spec: Any, field_name: str, context: Context) -> Transform:
    import tensorflow as tf

    delta = spec.max_delta
    return Transform(_features(
        lambda v, seed: tf.image.stateless_random_brightness(tf.cast(v, tf.float32), delta, seed=seed), field_name, "random_brightness"
    ))


def _random_contrast(spec: Any, field_name: str, context: Context) -> Transform:
    import tensorflow as tf

    lower, upper = spec.lower, spec.upper
    return Transform(_features(
        lambda v, seed: tf.image.stateless_random_contrast(tf.cast(v, tf.float32), lower, upper, seed=seed), field_name, "random_contrast"
    ))


#: The built-in transforms that are not Keras layers: label-side, dict and random ones
#: (and a cast to a dtype other than float32).
_FUNCTIONS: dict[str, Callable[[Any, str, Context], Transform]] = {
    "one_hot": _one_hot,
    "cast": _cast,
    "rename": _rename,
    "select": _select,
    "random_crop": _random_crop,
    "random_flip": _random_flip,
    "random_brightness": _random_brightness,
    "random_contrast": _random_contrast,
}


def _same_on_batches(fn: TransformFn) -> Transform:
    """A transform whose function treats a batch as it treats one example (elementwise ops)."""
    return Transform(fn, on_batches=fn)


def _guarded(fn: TransformFn, field_name: str, kind: str) -> TransformFn:
    """Shape and type mistakes found while tracing become one ConfigError line."""

    def call(x, y, seed):
        try:
            return fn(x, y, seed)
        except TrainkitError:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as err:  # (Keras layers raise IndexError too)
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


def chain_on_batches(fns: list[Transform]) -> TransformFn | None:
    """:func:`chain` applied to whole batches, or None if a transform needs single examples."""
    if any(fn.on_batches is None for fn in fns):
        return None
    return chain([Transform(fn.on_batches) for fn in fns])


def chain(fns: list[Transform]) -> TransformFn:
    """Apply transforms in order; each random one gets its own seed derived from ``seed``."""
    import tensorflow as tf

    def apply(x, y, seed=None):
        for i, fn in enumerate(fns):
            sub = None if seed is None else tf.random.experimental.stateless_fold_in(seed, i)
            x, y = fn(x, y, sub)
        return x, y

    return apply
