"""Install a version of this project as an "image" the local kubelet can run.

Each version gets its own virtualenv at ``~/.cache/flotilla/images/flotilla/<tag>``;
the image rules in ``tests/kube/images.yaml`` put its ``bin`` first on PATH for
``flotilla-node:<tag>`` and ``flotilla-operator:<tag>``. Two installed tags are enough
to test a rolling upgrade that really swaps the running code.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from .config import REPO_ROOT
from .images import cache_root


def image_dir(tag: str) -> Path:
    return cache_root() / "images" / "flotilla" / tag


def install_image(tag: str, source: str | None = None) -> Path:
    """Install the project from ``source`` into the venv for ``tag``.

    ``source`` is a directory, or a git ref of this repository (exported with
    ``git archive`` so the working tree is untouched); default: the working tree.
    """
    dest = image_dir(tag)
    with tempfile.TemporaryDirectory() as tmp:
        if source is None:
            src = REPO_ROOT
        elif Path(source).is_dir():
            src = Path(source)
        else:
            archive = subprocess.run(
                ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", source],
                check=True,
                capture_output=True,
            ).stdout
            src = Path(tmp) / "src"
            src.mkdir()
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        # Run outside the checkout: its top-level "operator" directory would shadow
        # the stdlib module of that name for `python -m` started there.
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(dest)], check=True, cwd=tmp)
        subprocess.run(
            [str(dest / "bin" / "python"), "-m", "pip", "install", "--quiet", str(src)],
            check=True,
            cwd=tmp,
        )
    return dest
