"""Model builders: a recipe's ``model`` section to a ``keras.Model``.

Built-in builders: ``sequential`` and ``functional`` (declarative layer lists),
``mlp``, ``cnn`` and ``resnet`` (:mod:`~trainkit.models.builders`), ``rnn`` and
``transformer`` (:mod:`~trainkit.models.sequences`). A recipe registers its own
with :func:`trainkit.register_model`; a builder receives its recipe arguments
plus whichever of ``input_shape``, ``num_outputs``, ``num_classes``, ``task`` and
``target_scale`` it declares (trainkit fills those in from the data), and
``vocab_size`` when the data reports a vocabulary and the recipe leaves it unset.
"""

from trainkit.models.build import build_model

__all__ = ["build_model"]
