"""A real API server for tests: TLS on 127.0.0.1 (random port), the cluster CA and admin token
from `auth.ca`, a kubeconfig for the real kubectl, and the official Python client.

The server runs its own event loop in a thread, so tests can call kubectl and the (blocking)
Python client directly, and async tests can talk to it from their own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import subprocess
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from hypernetes.api.authn import ADMIN, Authenticator, TokenAuthenticator, UnionAuthenticator, UserInfo
from hypernetes.api.authz import AllowAll, Authorizer
from hypernetes.api.client import ApiClient
from hypernetes.api.server import APP_KEY, ApiServer, bound_port, create_app, serve
from hypernetes.api.subresources import PodProxy
from hypernetes.api.tenancy import Tenancy, build_tenancy
from hypernetes.auth.ca import ClusterCA, ensure_ca, write_kubeconfig
from hypernetes.store.interface import Store
from tests.support.memstore import MemoryStore

T = TypeVar("T")
KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")


def kubectl_path(version: str) -> Path:
    return KUBECTL_DIR / f"kubectl.{version}"


class ApiServerThread:
    def __init__(
        self,
        workdir: Path,
        *,
        store_factory: Callable[[], Awaitable[Store]] | None = None,
        pod_proxy: PodProxy | None = None,
        authorizer: Authorizer | None = None,
        extra_users: dict[str, UserInfo] | None = None,
        tenancy: bool = False,
        **app_kw: Any,
    ) -> None:
        self.workdir = workdir
        self.ca: ClusterCA = ensure_ca(workdir / "pki")
        self.token = self.ca.admin_token
        self._store_factory = store_factory or self._memory
        self._proxy, self._authorizer, self._app_kw = pod_proxy, authorizer or AllowAll(), app_kw
        self._limits = app_kw.pop("connection_limits", None)  # for serve(), not create_app()
        self._users = {self.token: ADMIN, **(extra_users or {})}
        self._with_tenancy = tenancy
        self.tenancy: Tenancy | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="apiserver", daemon=True)
        self._runner: web.AppRunner | None = None
        self.store: Store | None = None
        self.port = 0
        self._py_clients: list[Any] = []
        self._transports: weakref.WeakSet[asyncio.Transport] = weakref.WeakSet()

    @staticmethod
    async def _memory() -> Store:
        return MemoryStore()

    def start(self) -> ApiServerThread:
        self._thread.start()
        self.call(self._start())
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        write_kubeconfig(self.kubeconfig, self.url, self.ca.ca_cert, self.token)
        return self

    async def _start(self) -> None:
        self.store = await self._store_factory()
        authenticator: Authenticator = TokenAuthenticator(self._users)
        if self._with_tenancy:
            # the multi-tenant server `hypernetes up` runs: tenant authorizer, admission, identity
            self.tenancy, builtin = build_tenancy(self.store, self.workdir / "pki", self.token)
            authenticator = UnionAuthenticator([authenticator, builtin])
            self._authorizer = self.tenancy.authorizer
            self._app_kw["tenancy"] = self.tenancy
        self.app = create_app(
            self.store,
            authenticator=authenticator,
            authorizer=self._authorizer,
            pod_proxy=self._proxy,
            **self._app_kw,
        )
        self.app.on_response_prepare.append(self._track)
        self._runner = await serve(self.app, "127.0.0.1", 0, self.ca.server, self._limits)
        self.port = bound_port(self._runner)

    async def _track(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.transport is not None:
            self._transports.add(request.transport)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def server(self) -> ApiServer:
        return self.app[APP_KEY]

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run `coro` on the server's loop (e.g. to compact its store) and wait for it."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self) -> None:
        for c in self._py_clients:
            c.close()

        async def _stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            await asyncio.sleep(0.1)
            # a client that holds a connection open without reading (its TLS close_notify never
            # answered) would outlive the loop: cut those
            for t in list(self._transports):
                t.abort()
            if self.store is not None:
                await self.store.close()

        self.call(_stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    # -- clients -------------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        version: str = "1.32",
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        home = self.workdir / f"home-{version}"
        home.mkdir(exist_ok=True)
        env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(self.kubeconfig)}
        proc = subprocess.run(
            [str(kubectl_path(version)), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def kubectl_env(self, version: str = "1.32") -> dict[str, str]:
        home = self.workdir / f"home-{version}"
        home.mkdir(exist_ok=True)
        return {**os.environ, "HOME": str(home), "KUBECONFIG": str(self.kubeconfig)}

    def kubectl_cmdline(self, *args: str, version: str = "1.32") -> str:
        return " ".join(shlex.quote(a) for a in (str(kubectl_path(version)), *args))

    def kubectl_popen(self, *args: str, version: str = "1.32") -> subprocess.Popen[str]:
        home = self.workdir / f"home-{version}"
        home.mkdir(exist_ok=True)
        env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(self.kubeconfig)}
        return subprocess.Popen(
            [str(kubectl_path(version)), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.PIPE,
            text=True,
            env=env,
        )

    def python_client(self) -> Any:
        import kubernetes.client as kc

        cfg = kc.Configuration()
        cfg.host = self.url
        cfg.ssl_ca_cert = str(self.ca.ca_cert)
        cfg.api_key = {"authorization": self.token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        client = kc.ApiClient(cfg)
        self._py_clients.append(client)  # closed (with their sockets) in stop()
        return client


@contextlib.asynccontextmanager
async def async_client(api: ApiServerThread) -> AsyncIterator[ApiClient]:
    """The shared async client, closed so that its TLS connections finish closing before the
    test's event loop ends (else their sockets are reported unclosed)."""
    c = ApiClient(api.url, token=api.token, ca_file=api.ca.ca_cert)
    try:
        yield c
    finally:
        await c.close()
        await asyncio.sleep(0.25)
