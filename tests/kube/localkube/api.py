"""A deliberately small Kubernetes API client over ``requests``.

The local kubelet needs only get/list/watch/create/patch/delete on a handful of
resources; plain JSON dicts keep it readable and free of generated-client layers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests

from .config import Config
from .pki import Pki

Obj = dict[str, Any]


class ApiError(Exception):
    """A non-2xx answer from the apiserver."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body[:500]}")
        self.status = status


class Api:
    """Authenticated session against the local apiserver (admin identity)."""

    def __init__(self, cfg: Config, identity: str = "admin") -> None:
        pki = Pki(cfg.pki)
        self.base = cfg.server
        self._local = threading.local()
        self._verify = str(pki.ca_cert)
        self._cert = (str(pki.cert(identity)), str(pki.key(identity)))

    @property
    def session(self) -> requests.Session:
        """One session per thread: requests.Session is not thread-safe."""
        s: requests.Session | None = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            # Ignore REQUESTS_CA_BUNDLE and proxy variables: they would override our CA.
            s.trust_env = False
            s.verify = self._verify
            s.cert = self._cert
            self._local.session = s
        return s

    def request(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        resp = self.session.request(
            method,
            self.base + path,
            data=json.dumps(body) if body is not None else None,
            params=params,
            headers={"Content-Type": content_type},
            timeout=30,
        )
        if resp.status_code >= 300:
            raise ApiError(resp.status_code, resp.text)
        result: Obj = resp.json() if resp.content else {}
        return result

    def get(self, path: str, params: dict[str, str] | None = None) -> Obj:
        return self.request("GET", path, params=params)

    def get_or_none(self, path: str) -> Obj | None:
        try:
            return self.get(path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def create(self, path: str, body: Obj) -> Obj:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: Obj) -> Obj:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str, body: Obj | None = None) -> Obj | None:
        try:
            return self.request("DELETE", path, body)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def watch(
        self, path: str, params: dict[str, str] | None = None, stop: Callable[[], bool] = bool
    ) -> Iterator[tuple[str, Obj]]:
        """List then watch ``path`` forever, yielding (event type, object).

        Each (re-)list is framed as ("RESET", {}), one ADDED per listed object, then
        ("SYNCED", {}); after that it follows the watch from the list's resourceVersion.
        It re-lists when the watch expires (410 Gone) or fails, so a consumer that keeps
        state should treat what was not listed between RESET and SYNCED as deleted.
        """
        params = dict(params or {})
        while not stop():
            try:
                listed = self.get(path, params)
            except (requests.RequestException, ApiError):
                stop_wait(stop, 1.0)
                continue
            yield "RESET", {}
            for item in listed.get("items", []):
                yield "ADDED", item
            yield "SYNCED", {}
            rv = listed["metadata"]["resourceVersion"]
            while not stop():
                try:
                    resp = self.session.get(
                        self.base + path,
                        params={
                            **params,
                            "watch": "1",
                            "resourceVersion": rv,
                            "allowWatchBookmarks": "true",
                            "timeoutSeconds": "60",
                        },
                        stream=True,
                        timeout=(10, 90),
                    )
                    if resp.status_code == 410:
                        break
                    if resp.status_code >= 300:
                        raise ApiError(resp.status_code, resp.text)
                    for line in resp.iter_lines():
                        if not line:
                            continue
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            if obj.get("code") == 410:
                                raise _Gone
                            raise ApiError(obj.get("code", 500), json.dumps(obj))
                        rv = obj["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            yield event["type"], obj
                except _Gone:
                    break
                except (requests.RequestException, ApiError, ValueError):
                    stop_wait(stop, 1.0)
                    break


class _Gone(Exception):
    """The watch's resourceVersion is too old: re-list."""


def stop_wait(stop: Callable[[], bool], seconds: float) -> None:
    """Sleep up to ``seconds`` unless asked to stop (back-off between retries)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop():
        time.sleep(0.1)
