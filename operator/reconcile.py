"""One pass of the operator's loop: observe, plan, act, write status, tell people.

``handlers`` calls ``one_pass`` on every kopf event and timer tick; everything it needs comes
from the RaftCluster body and the world, so passes can run in any order and any number of
times. Passes for one cluster never overlap: a pass that finds another one running returns,
and the next tick looks again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import grpc

from . import act as a
from . import plan as p
from . import status
from .kube import Kube, KubeError
from .metrics import METRICS
from .model import Spec
from .observe import World, observe

log = logging.getLogger(__name__)

_running: set[str] = set()
_running_lock = threading.Lock()

# Steps that change nothing; the rest are announced as Events when they are carried out.
_PASSIVE = (p.WaitFor, p.Done, p.ReportQuorumLost, p.RolloutHalted)


def one_pass(kube: Kube, body: Mapping[str, Any]) -> p.Step | None:
    """Take at most one step toward the spec of ``body``; None if another pass is running."""
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return None  # owner references take everything else away
    uid = meta["uid"]
    with _running_lock:
        if uid in _running:
            return None
        _running.add(uid)
    try:
        return _pass(kube, body)
    finally:
        with _running_lock:
            _running.discard(uid)


def _pass(kube: Kube, body: Mapping[str, Any]) -> p.Step:
    began = time.monotonic()
    acted: float | None = None
    spec = Spec.from_body(body)
    world = observe(kube, body)
    step = p.plan(spec, world.observed)
    previous: Mapping[str, Any] = body.get("status") or {}
    failure = None
    if not isinstance(step, _PASSIVE):
        log.info("%s/%s: %s: %s", spec.namespace, spec.name, step.reason, step.message)
        act_began = time.monotonic()
        try:
            detail = _carry_out(kube, body, world, step)
        except (grpc.RpcError, KubeError, a.ActError) as exc:
            failure = _describe(exc)
            log.warning("%s/%s: %s failed: %s", spec.namespace, spec.name, step.reason, failure)
        acted = time.monotonic() - act_began
    new = status.build(spec, world.observed, step, previous)
    kube.patch("raftclusters", spec.namespace, spec.name, {"status": new}, sub="status")
    for reason, message, warning in announcements(step, previous, new, failure):
        a.event(kube, body, reason, message, warning)
    if failure is None and not isinstance(step, _PASSIVE):
        _announced(kube, body, step, detail)
    METRICS.record(
        spec.namespace, spec.name, type(step).__name__, new, failure is not None,
        time.monotonic() - began, acted,
    )  # fmt: skip
    return step


def _carry_out(kube: Kube, body: Mapping[str, Any], world: World, step: p.Step) -> str:
    """Act; what the step went through, for its Event (the phases of a reconfiguration)."""
    if isinstance(step, p.Reconfigure):
        phases = a.reconfigure(a.leader_address(world), step.voters, step.learners, world.dialer)
        return " -> ".join(phases)
    a.act(kube, body, world, step)
    return ""


def _announced(kube: Kube, body: Mapping[str, Any], step: p.Step, detail: str) -> None:
    message = f"{step.message} ({detail})" if detail else step.message
    a.event(kube, body, step.reason, message)


def announcements(
    step: p.Step, previous: Mapping[str, Any], new: Mapping[str, Any], failure: str | None
) -> list[tuple[str, str, bool]]:
    """Events for what did not act: failures, and changes of what the cluster waits for.

    Pure, so that a timer ticking every few seconds does not repeat the same Event: a wait
    or an alarm is told once, when it begins or its message changes.
    """
    out = []
    if failure is not None:
        out.append(("StepFailed", f"{step.message}: {failure}", True))
    before = previous.get("operation") or {}
    now = new.get("operation") or {}
    if isinstance(step, p.WaitFor) and before.get("message") != now.get("message"):
        out.append((step.why, step.message, False))
    alarm = isinstance(step, p.ReportQuorumLost | p.RolloutHalted)
    if alarm and (previous.get("phase") != new.get("phase") or _degraded(previous) != step.message):
        out.append((step.reason, step.message, True))
    # Told when the cluster comes to rest, not when it rests Degraded (an alarm, a member
    # down): that has its own Warning or condition.
    done = new.get("phase") == "Running" and previous.get("phase") != "Running"
    if isinstance(step, p.Done) and done:
        out.append((step.reason, step.message, False))
    raised = _condition(new, "Degraded")
    message = str(raised.get("message", ""))
    if raised.get("reason") == status.ALARM_RAISED and _degraded(previous) != message:
        out.append((status.ALARM_RAISED, message, True))
    return out


def _condition(st: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    return next((c for c in st.get("conditions") or [] if c.get("type") == kind), {})


def _degraded(st: Mapping[str, Any]) -> str:
    return str(_condition(st, "Degraded").get("message", ""))


def _describe(exc: Exception) -> str:
    if isinstance(exc, grpc.RpcError):
        call: Any = exc
        code = call.code()
        return f"{code.name if code else 'error'}: {call.details()}"
    return str(exc)
