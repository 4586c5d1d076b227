"""Pod Events, as a kubelet records them, so ``kubectl describe pod`` tells the story.

Best effort: an Event that cannot be written is not worth failing a pod over.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

from .api import Api, ApiError

Obj = dict[str, Any]


class Recorder:
    """Writes core/v1 Events about one pod, from the kubelet of its node."""

    def __init__(self, api: Api, pod: Obj) -> None:
        self.api = api
        meta = pod["metadata"]
        self.node = str(pod["spec"].get("nodeName", ""))
        self.ns = str(meta["namespace"])
        self.involved = {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": self.ns,
            "name": meta["name"],
            "uid": meta["uid"],
        }

    def __call__(
        self, reason: str, message: str, container: str = "", warning: bool = False
    ) -> None:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved = dict(self.involved)
        if container:
            involved["fieldPath"] = f"spec.containers{{{container}}}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": self.ns},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": "kubelet", "host": self.node},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.api.create(f"/api/v1/namespaces/{self.ns}/events", event)
        except ApiError as e:
            if e.status not in (403, 404):  # namespace going away: nobody will read it
                print(f"event {reason} for {self.ns}/{involved['name']}: {e}", file=sys.stderr)
        except OSError as e:
            print(f"event {reason} for {self.ns}/{involved['name']}: {e}", file=sys.stderr)
