"""Map container images to local commands.

There is no container runtime: an "image" is a rule saying which local program plays
that image. A rule matches the image repository (glob) and tag (glob) and gives, like
an OCI image config, an entrypoint, a default cmd, environment, and directories to put
first on PATH. ``{tag}``, ``{python}`` (this interpreter), ``{python_bin}`` (its
directory), ``{repo}`` and ``{cache}`` (``~/.cache/flotilla``) are substituted, so
one rule such as ``flotilla-node:*`` -> ``{cache}/images/flotilla/{tag}/bin`` serves every
installed version and a rolling upgrade really switches the code that runs.

Rules are read when a container starts, first match wins, from: ``images.yaml`` in
the cluster's state directory (rules added while the cluster runs, e.g. by a test),
then ``$FLOTILLA_KUBE_IMAGES`` (default ``tests/kube/images.yaml``, YAML or JSON),
then the built-in rules below.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import REPO_ROOT

TESTSERVER = Path(__file__).resolve().parent / "testserver.py"
DEFAULT_FILE = REPO_ROOT / "tests" / "kube" / "images.yaml"


def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("FLOTILLA_IMAGE_CACHE", base / "flotilla"))


@dataclass(frozen=True)
class ImageRule:
    """One image -> command rule (fields as in an OCI image config)."""

    image: str
    tag: str = "*"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)
    workdir: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageRule:
        return cls(
            image=d["image"],
            tag=str(d.get("tag", "*")),
            entrypoint=list(d.get("entrypoint", [])),
            cmd=list(d.get("cmd", [])),
            env={k: str(v) for k, v in d.get("env", {}).items()},
            path=list(d.get("path", [])),
            workdir=d.get("workdir"),
        )


BUILTIN = [
    # A tiny HTTP server for tests; it reports the tag so upgrades are visible.
    ImageRule(
        image="flotilla-test/httpserver",
        entrypoint=["{python}", str(TESTSERVER)],
        env={"IMAGE_TAG": "{tag}"},
    ),
    # Shell images run the host's userland, for command-only test pods.
    *(ImageRule(image=name, cmd=["sh"]) for name in ("busybox", "alpine", "debian")),
]


@dataclass(frozen=True)
class ResolvedImage:
    """What to run for one container: argv, extra env, PATH prefix, workdir, id."""

    argv: list[str]
    env: dict[str, str]
    path: list[str]
    workdir: str | None
    image_id: str


class ImageError(Exception):
    """No rule for the image, or the rule points at something not installed."""


def split_image(image: str) -> tuple[str, str]:
    """``registry/repo:tag@digest`` -> (``registry/repo``, ``tag``); tag defaults to latest."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = ref.rsplit(":", 1)
        return repo, tag
    return ref, "latest"


def read_rules(path: Path) -> list[ImageRule]:
    """The rules of one YAML/JSON file (``{"images": [...]}``); none if it does not exist."""
    if not path.exists():
        return []
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return [ImageRule.from_dict(d) for d in (data or {}).get("images", [])]


def load_rules(runtime_file: Path | None = None) -> list[ImageRule]:
    """Runtime rules, then the configured file, then built-ins."""
    configured = Path(os.environ.get("FLOTILLA_KUBE_IMAGES", DEFAULT_FILE))
    runtime = read_rules(runtime_file) if runtime_file is not None else []
    return runtime + read_rules(configured) + BUILTIN


def _matches(rule: ImageRule, repo: str, tag: str) -> bool:
    names = {repo, repo.rsplit("/", 1)[-1]}
    if "/" in repo and "." in repo.split("/", 1)[0]:
        names.add(repo.split("/", 1)[1])  # without the registry host
    return any(fnmatch.fnmatchcase(n, rule.image) for n in names) and fnmatch.fnmatchcase(
        tag, rule.tag
    )


def resolve(
    image: str, command: list[str] | None, args: list[str] | None, rules: list[ImageRule]
) -> ResolvedImage:
    """Pick the rule for ``image`` and build argv with Kubernetes semantics.

    ``command`` replaces the entrypoint (and drops the image cmd); ``args`` replaces the cmd.
    """
    repo, tag = split_image(image)
    for rule in rules:
        if _matches(rule, repo, tag):
            break
    else:
        raise ImageError(f"no local command is configured for image {image!r}")
    subst = {
        "tag": tag,
        "python": sys.executable,
        "python_bin": str(Path(sys.executable).parent),
        "repo": str(REPO_ROOT),
        "cache": str(cache_root()),
    }

    def sub(s: str) -> str:
        for k, v in subst.items():
            s = s.replace("{" + k + "}", v)
        return s

    path = [sub(p) for p in rule.path]
    for p in path:
        if not Path(p).is_dir():
            raise ImageError(f"image {image!r} is not installed here: {p} does not exist")
    if command:
        argv = list(command) + list(args or [])
    else:
        argv = [sub(a) for a in rule.entrypoint] + (
            list(args) if args else [sub(a) for a in rule.cmd]
        )
    if not argv:
        raise ImageError(f"image {image!r} has no entrypoint and the container no command")
    env = {k: sub(v) for k, v in rule.env.items()}
    digest = hashlib.sha256(
        json.dumps([repo, tag, argv, env, path], sort_keys=True).encode()
    ).hexdigest()
    return ResolvedImage(
        argv=argv,
        env=env,
        path=path,
        workdir=sub(rule.workdir) if rule.workdir else None,
        image_id=f"localkube://{repo}@sha256:{digest}",
    )
