"""rnnedge.runtime: stream a recurrent model one sample at a time. Needs numpy and safetensors only."""

from .bundle import Bundle, load_bundle
from .errors import BundleError, InputError, MissingDependency, RnnEdgeError
from .stream import Model, Stream, load

__all__ = [
    "load",
    "load_bundle",
    "Bundle",
    "Model",
    "Stream",
    "RnnEdgeError",
    "BundleError",
    "InputError",
    "MissingDependency",
]
