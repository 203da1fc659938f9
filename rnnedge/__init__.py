"""rnnedge: PyTorch recurrent models -> quantised bundles -> one-sample-at-a-time streaming on edge CPUs.

Pipeline: rnnedge.train -> rnnedge.export -> rnnedge.runtime -> rnnedge.devices (see ARCHITECTURE.md).
"""

from __future__ import annotations

import importlib.util
import os

__version__ = "0.1.0"

# The subpackages pyproject.toml's package-dir maps: in a checkout rnnedge.X is the folder X/ next to
# rnnedge/ (runtime/backends inside runtime/); in an installed wheel it is rnnedge/X/.
SUBPACKAGES = ("train", "export", "runtime", "devices")


class LayoutError(ImportError):
    """rnnedge's subpackages come from different folders (two checkouts mixed)."""


def check_layout() -> dict[str, str]:
    """Where each subpackage comes from ({name: folder}); LayoutError if they are not all from the folder
    rnnedge/ itself comes from. With one checkout installed editable, running a second checkout's code
    imports that checkout's rnnedge/ but the first one's train/, export/, runtime/ (the installed finder
    resolves them): tests would then test code that is not the code in front of you."""
    here = os.path.dirname(os.path.abspath(__file__))
    found, wrong = {}, []
    for name in SUBPACKAGES:
        spec = importlib.util.find_spec(f"{__name__}.{name}")
        folder = os.path.dirname(os.path.abspath(spec.origin)) if spec and spec.origin else None
        found[name] = folder
        if folder is None or not _beside(folder, here, name):
            wrong.append(name)
    if wrong:
        raise LayoutError(
            f"rnnedge is mixed from different folders: rnnedge/ is {here}, but "
            + ", ".join(f"rnnedge.{n} is {found[n]}" for n in wrong)
            + ". One checkout is installed (editable) and another one's code is running. Use the venv of "
            f"the checkout you work in, or reinstall it there: pip install -e {os.path.dirname(here)}"
        )
    return found


def _beside(folder: str, here: str, name: str) -> bool:
    """folder is rnnedge/NAME (wheel) or ../NAME next to rnnedge/ (checkout), as named or with links
    resolved (the emulated-ARM tree is made of links)."""
    for f, h in ((folder, here), (os.path.realpath(folder), os.path.realpath(here))):
        if f in (os.path.join(h, name), os.path.join(os.path.dirname(h), name)):
            return True
    return False


check_layout()
