"""Model builders: a recipe's ``model`` section to a ``keras.Model``.

Built-in builders: ``sequential`` and ``functional`` (declarative layer lists),
``mlp`` and ``cnn``. A recipe registers its own with
:func:`trainkit.register_model`; a builder receives its recipe arguments plus
whichever of ``input_shape``, ``num_outputs``, ``num_classes`` and ``task`` it
declares (trainkit fills those in from the data).
"""

from trainkit.models.build import build_model

__all__ = ["build_model"]
