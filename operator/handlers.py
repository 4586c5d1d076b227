"""kopf entry points: every event and timer tick of a RaftCluster runs one pass.

Run with ``kopf run -m flotilla.operator.handlers --standalone`` (add ``--all-namespaces``).
Deleting a RaftCluster needs no handler: everything it owns carries an owner reference, and
the StatefulSet's claim retention follows ``spec.pvcRetentionPolicy``. kopf keeps a finalizer
on each RaftCluster while its timer runs, so delete RaftClusters before the operator.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from . import metrics
from .kube import Kube
from .model import GROUP, PLURAL, VERSION
from .reconcile import one_pass

# How often each cluster is looked at when nothing happens; also the pace of multi-step
# operations (one step per pass).
INTERVAL_S = 2.0

_kube: Kube | None = None


def kube() -> Kube:
    global _kube
    if _kube is None:
        _kube = Kube()
    return _kube


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Progress in annotations: the CRD's status schema has no room for kopf's own fields.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    # Our Events say what happened; kopf's "handler succeeded" every tick would drown them.
    settings.posting.level = logging.WARNING
    metrics.serve()


# A pass that fails (the API server or every member briefly unreachable) is retried at the
# timer's pace, not after kopf's default minute.
@kopf.on.resume(GROUP, VERSION, PLURAL, backoff=INTERVAL_S)
@kopf.on.create(GROUP, VERSION, PLURAL, backoff=INTERVAL_S)
@kopf.on.update(GROUP, VERSION, PLURAL, backoff=INTERVAL_S)
def changed(body: kopf.Body, **_: Any) -> None:
    one_pass(kube(), body)


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL_S, backoff=INTERVAL_S)
def tick(body: kopf.Body, **_: Any) -> None:
    one_pass(kube(), body)
