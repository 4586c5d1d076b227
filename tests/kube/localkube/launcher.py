"""Last step before a container's program: hostname, volume mounts, workdir, exec.

Runs as ``ip netns exec NS unshare --uts -- python launcher.py SPEC.json``. By then
the process is in the pod's network namespace, in a private mount namespace (``ip
netns exec`` makes one and bind-mounts the pod's hosts file over /etc/hosts) and in a
private UTS namespace. Mounts made here vanish with the process: nothing to unmount.
Stdlib only, and it replaces itself with the container program (same pid).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def _mkdir_recorded(path: Path, record: Path) -> None:
    """Create a missing mount point, remembering it so ``down`` can remove it."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    if not missing:
        return
    path.mkdir(parents=True, exist_ok=True)
    with open(record, "a") as f:
        for m in missing:
            f.write(f"{m}\n")


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    socket.sethostname(spec["hostname"])
    for m in spec["mounts"]:
        target = Path(m["target"])
        if Path(m["source"]).is_dir():
            _mkdir_recorded(target, Path(spec["mountpoint_record"]))
        else:
            _mkdir_recorded(target.parent, Path(spec["mountpoint_record"]))
            if not target.exists():
                target.touch()
                with open(spec["mountpoint_record"], "a") as f:
                    f.write(f"{target}\n")
        subprocess.run(["mount", "--bind", m["source"], str(target)], check=True)
        if m.get("readOnly"):
            subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
    workdir = Path(spec.get("workdir") or "/")
    _mkdir_recorded(workdir, Path(spec["mountpoint_record"]))  # as a runtime would
    os.chdir(workdir)
    env = spec["env"]
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        print(f"localkube: cannot run {argv[0]!r}: {e}", file=sys.stderr, flush=True)
        sys.exit(127)


if __name__ == "__main__":
    main()
