"""rnnedge: PyTorch recurrent models -> quantised bundles -> one-sample-at-a-time streaming on edge CPUs.

Pipeline: rnnedge.train -> rnnedge.export -> rnnedge.runtime -> rnnedge.devices (see ARCHITECTURE.md).
"""

__version__ = "0.1.0"
