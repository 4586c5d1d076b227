"""Kubernetes objects (plain dicts, as kopf and the API return them) to model values.

The pure half of ``observe``: it lists objects and asks a member for the member list, these
functions turn what came back into the frozen values ``plan`` reads. Kept beside the builders
in spirit: each reads back exactly what ``resources`` wrote.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from . import model
from .resources import INITIAL_STATE_ANNOTATION, VOLUME


def timestamp(value: str | None) -> float:
    """Seconds since the epoch of a Kubernetes RFC 3339 time (0.0 when absent)."""
    if not value:
        return 0.0
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def image_tag(image: str) -> str:
    """The tag of an image reference ("" for a digest or no tag)."""
    last = image.rsplit("/", 1)[-1]
    if "@" in last or ":" not in last:
        return ""
    return last.rsplit(":", 1)[1]


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return obj.get("metadata", {}).get("annotations") or {}


def read_statefulset(obj: Mapping[str, Any]) -> model.StatefulSet:
    template = obj["spec"]["template"]
    notes = _annotations(template)
    return model.StatefulSet(
        replicas=int(obj["spec"].get("replicas", 1)),
        config_hash=notes.get(model.CONFIG_HASH_ANNOTATION, ""),
        initial_cluster_state=notes.get(INITIAL_STATE_ANNOTATION, "new"),
    )


def read_pod(cluster: str, obj: Mapping[str, Any]) -> model.Pod | None:
    """None for a pod that is not one of this cluster's ordinals."""
    meta = obj["metadata"]
    ordinal = model.ordinal_of(cluster, meta["name"])
    if ordinal is None:
        return None
    status = obj.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    containers = obj.get("spec", {}).get("containers") or [{}]
    restarts = sum(int(c.get("restartCount", 0)) for c in status.get("containerStatuses") or [])
    return model.Pod(
        ordinal=ordinal,
        phase=status.get("phase", "Pending"),
        ready=ready,
        version=image_tag(containers[0].get("image", "")),
        config_hash=_annotations(obj).get(model.CONFIG_HASH_ANNOTATION, ""),
        created_at=timestamp(meta.get("creationTimestamp")),
        deleting=bool(meta.get("deletionTimestamp")),
        restarts=restarts,
    )


def read_pvc(cluster: str, obj: Mapping[str, Any]) -> model.Pvc | None:
    """The data claim ``data-<cluster>-<k>``; None for any other claim."""
    meta = obj["metadata"]
    prefix = f"{VOLUME}-"
    if not meta["name"].startswith(prefix):
        return None
    ordinal = model.ordinal_of(cluster, meta["name"][len(prefix) :])
    if ordinal is None:
        return None
    bound = _annotations(obj).get(model.MEMBER_ID_ANNOTATION)
    return model.Pvc(
        ordinal=ordinal,
        member_id=int(bound, 16) if bound else None,
        deleting=bool(meta.get("deletionTimestamp")),
    )


def member_ordinal(cluster: str, name: str, peer_urls: Iterable[str]) -> int | None:
    """Which pod a member is: by name once started, by peer URL before that."""
    for candidate in (name, *peer_urls):
        if candidate:
            ordinal = model.ordinal_of(cluster, candidate)
            if ordinal is not None:
                return ordinal
    return None


def read_pods(cluster: str, objs: Iterable[Mapping[str, Any]]) -> tuple[model.Pod, ...]:
    pods = (read_pod(cluster, o) for o in objs)
    return tuple(sorted((p for p in pods if p is not None), key=lambda p: p.ordinal))


def read_pvcs(cluster: str, objs: Iterable[Mapping[str, Any]]) -> tuple[model.Pvc, ...]:
    pvcs = (read_pvc(cluster, o) for o in objs)
    return tuple(sorted((p for p in pvcs if p is not None), key=lambda p: p.ordinal))


def read_operation(status: Mapping[str, Any]) -> model.Operation | None:
    op = status.get("operation")
    if not op:
        return None
    return model.Operation(
        type=op.get("type", ""),
        target=str(op.get("target", "")),
        step=op.get("step", ""),
        started_at=op.get("startedAt", ""),
        message=op.get("message", ""),
    )


def _covers(live: Any, desired: Any) -> bool:
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            k in live and _covers(live[k], v) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(_covers(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)


def drifted(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """Whether a field the builders set has another value in the live object.

    Fields the API server fills in (a Service's clusterIP, a port's protocol, ...) are not
    drift; what observe reports in ``Observed.missing`` is missing or drifted.
    """
    mine = {"spec": desired.get("spec", {}), "labels": desired["metadata"].get("labels", {})}
    theirs = {"spec": live.get("spec", {}), "labels": live["metadata"].get("labels", {})}
    return not _covers(theirs, mine)
