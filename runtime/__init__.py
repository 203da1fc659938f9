"""rnnedge.runtime: stream a recurrent model one sample at a time. Needs numpy and safetensors only."""

from .bundle import Bundle, Limits, load_bundle
from .errors import BundleError, InputError, MissingDependency, OutputError, RnnEdgeError
from .isolate import load_untrusted, probe_bundle
from .stream import Model, Stream, load

__all__ = [
    "load",
    "load_bundle",
    "Bundle",
    "Limits",
    "probe_bundle",
    "load_untrusted",
    "Model",
    "Stream",
    "RnnEdgeError",
    "BundleError",
    "InputError",
    "OutputError",
    "MissingDependency",
]
