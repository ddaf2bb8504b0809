"""video-iba: Information Bottleneck Attribution for image and video classifiers, in bits."""

from ._version import __version__
from .api import estimate, explain
from .attribution import Attribution
from .bottleneck.estimator import Statistics
from .config import IBAConfig
from .errors import UserInputError
from .models import get_spec, list_models, load_model

__all__ = [
    "__version__", "explain", "estimate", "Attribution", "Statistics", "IBAConfig", "UserInputError",
    "load_model", "list_models", "get_spec",
]
