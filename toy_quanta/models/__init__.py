"""Flax NNX models. Importing the package registers the built-in ones (toy_quanta.registry)."""

from toy_quanta.models import dense_mlp, embed_mlp, mlp, onehot_mlp, transformer  # noqa: F401  (registration)
