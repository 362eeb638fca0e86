"""splatcast: one photo in, a Gaussian-splat avatar streamed over WebRTC out."""

import sys
from pathlib import Path

__version__ = "0.1.0"


def _keep_source_tree_behind_installed_packages() -> None:
    """The source tree's top-level folders install as ``splatcast.kernels``, ``splatcast.streaming``
    and so on. Where the tree itself is on ``sys.path`` ahead of site-packages (``python -m`` run in
    it, ``PYTHONPATH=$PWD``, pytest's default import mode), they would also import as bare
    ``kernels`` or ``streaming`` and shadow the PyPI packages of those names (transformers imports
    Hugging Face's ``kernels``). Such entries move to the end, where ``tests`` still imports."""
    tree = Path(__file__).resolve().parent.parent
    if not (tree / "pyproject.toml").is_file() or not (tree / "kernels" / "csrc").is_dir():
        return  # an installed copy: no source tree to shadow anything
    ahead = [entry for entry in sys.path if Path(entry or ".").resolve() == tree]
    if ahead:
        sys.path[:] = [entry for entry in sys.path if entry not in ahead] + [str(tree)]


_keep_source_tree_behind_installed_packages()
