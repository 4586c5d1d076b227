"""A dynamic provisioner for PersistentVolumeClaims backed by host directories.

It plays the part of an external provisioner: the default StorageClass ``local``
names it, the PV controller (in kube-controller-manager) waits for it to create a PV
for each pending claim and then binds the two. When a claim is deleted its PV becomes
Released; with reclaim policy Delete this code removes the directory and the PV.
Data therefore survives pod deletion and goes away with the claim.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from .api import Api, ApiError
from .config import Config

Obj = dict[str, Any]
PROVISIONER = "flotilla.local/hostpath"
STORAGE_CLASS = "local"


def ensure_storage_class(api: Api) -> None:
    body = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": True,
    }
    try:
        api.create("/apis/storage.k8s.io/v1/storageclasses", body)
    except ApiError as e:
        if e.status != 409:
            raise


class Provisioner:
    """Creates a hostPath PV per pending claim of our class; deletes released ones."""

    def __init__(self, cfg: Config, api: Api) -> None:
        self.cfg, self.api = cfg, api

    def _ours(self, pvc: Obj) -> bool:
        ann = pvc["metadata"].get("annotations", {})
        wanted = ann.get("volume.kubernetes.io/storage-provisioner") or ann.get(
            "volume.beta.kubernetes.io/storage-provisioner"
        )
        return bool(wanted == PROVISIONER or pvc["spec"].get("storageClassName") == STORAGE_CLASS)

    def on_claim(self, pvc: Obj) -> None:
        """Provision a PV for ``pvc`` if it is ours, unbound and not being deleted."""
        meta, spec = pvc["metadata"], pvc["spec"]
        if spec.get("volumeName") or meta.get("deletionTimestamp") or not self._ours(pvc):
            return
        if pvc.get("status", {}).get("phase", "Pending") != "Pending":
            return
        name = f"pvc-{meta['uid']}"
        directory = self.cfg.volumes / f"{meta['namespace']}-{meta['name']}-{meta['uid'][:8]}"
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)
        size = spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": name,
                "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
            },
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.get("accessModes", ["ReadWriteOnce"]),
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": spec.get("storageClassName") or STORAGE_CLASS,
                "volumeMode": spec.get("volumeMode", "Filesystem"),
                "hostPath": {"path": str(directory), "type": "Directory"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            self.api.create("/api/v1/persistentvolumes", pv)
            print(f"provisioned {name} at {directory}", file=sys.stderr, flush=True)
        except ApiError as e:
            if e.status != 409:
                print(f"provisioning {name} failed: {e}", file=sys.stderr, flush=True)

    def on_volume(self, pv: Obj) -> None:
        """Reclaim a Released PV of ours: remove its directory, then the PV."""
        meta, spec = pv["metadata"], pv["spec"]
        if meta.get("annotations", {}).get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
            return
        if pv.get("status", {}).get("phase") not in ("Released", "Failed"):
            return
        if spec.get("persistentVolumeReclaimPolicy") != "Delete":
            return
        path = Path(spec.get("hostPath", {}).get("path", ""))
        if path.is_relative_to(self.cfg.volumes) and path != self.cfg.volumes:
            shutil.rmtree(path, ignore_errors=True)
        self.api.delete(f"/api/v1/persistentvolumes/{meta['name']}")
        print(f"deleted {meta['name']} and {path}", file=sys.stderr, flush=True)
