"""Models: a registry of the papers' networks. Every later stage also accepts any nn.Module."""

from .registry import MODELS, build, count_parameters, glorot_init
from . import conv, lenet  # noqa: F401  (registers the models)
from .files import from_description

__all__ = ["MODELS", "build", "count_parameters", "from_description", "glorot_init"]
