"""Metrics and structured logs: `hypernetes up --log-format json` run for real (every line it logs
parsed as JSON, the API server's /metrics parsed as Prometheus text with the controllers' and the
process's metrics in it, still refused to tenants), the log fields of a pod's work in the node
agent, and the image pull histogram after a real pull."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hypernetes.logfmt import JsonFormatter, TextFormatter, bind, current_fields, log_fields
from hypernetes.runtime.images import ImageStore
from hypernetes.runtime.images.pullmetrics import PULL_SECONDS
from tests.support.waiting import wait_for


def _families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    return {
        f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)
    }


@contextlib.contextmanager
def captured(formatter: logging.Formatter) -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger("hypernetes")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def test_formats_carry_context_and_extra_fields() -> None:
    log = logging.getLogger("hypernetes.test")
    with captured(JsonFormatter()) as out, log_fields(namespace="shop", pod="web-1"):
        log.info("pulling %s", "busybox", extra={"sandbox": "abc"})
        try:
            raise OSError("disk gone")
        except OSError:
            log.exception("oh no")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert (
        first["msg"] == "pulling busybox"
        and first["level"] == "info"
        and first["logger"] == "hypernetes.test"
    )
    assert (first["pod"], first["namespace"], first["sandbox"]) == ("web-1", "shop", "abc")
    assert second["level"] == "error" and "OSError: disk gone" in second["error"]
    assert current_fields() == {}  # the block's fields are gone after it
    with captured(TextFormatter()) as out, log_fields(tenant="acme"):
        log.warning('said "hi" = x')
    line = out.getvalue().strip()
    assert line.split(" ", 1)[1] == 'level=warning logger=hypernetes.test msg="said \\"hi\\" = x" tenant=acme'


async def test_a_tasks_bound_fields_stay_in_that_task() -> None:
    log = logging.getLogger("hypernetes.test")

    async def pod(name: str) -> None:
        bind(pod=name)
        await asyncio.sleep(0)
        log.info("working")

    with captured(JsonFormatter()) as out:
        await asyncio.gather(pod("a"), pod("b"))
        log.info("outside")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(x.get("pod", "-") for x in lines) == ["-", "a", "b"]


def test_image_pulls_are_timed(tmp_path: Path, busybox_ref: str) -> None:
    def pulls() -> float:
        return sum(s.value for m in PULL_SECONDS.collect() for s in m.samples if s.name.endswith("_count"))

    before = pulls()
    ImageStore(tmp_path / "images").pull(busybox_ref)
    assert pulls() == before + 1
    sample = next(
        s for m in PULL_SECONDS.collect() for s in m.samples if s.name.endswith("_count") and s.value
    )
    assert sample.labels == {"image_size_in_bytes": "0-10MB"}


@pytest.mark.slow
def test_up_logs_json_and_serves_every_components_metrics(tmp_path: Path) -> None:
    """A control plane (`up --no-node`): each line on stderr is a JSON object (but the banner
    for people); /metrics has the API server's requests, the controllers' work queues, the
    scheduler's attempts and the process's own figures, for operators only."""
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hypernetes.cli.main",
            "up",
            "--no-node",
            "--port",
            "0",
            "--log-format",
            "json",
            "--data-dir",
            str(data),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        kubeconfig = data / "admin.kubeconfig"
        wait_for(lambda: kubeconfig.exists() and kubeconfig.stat().st_size > 0, timeout=60, what="kubeconfig")
        cfg = yaml.safe_load(kubeconfig.read_text())
        url = cfg["clusters"][0]["cluster"]["server"]
        token = cfg["users"][0]["user"]["token"]
        ca = str(data / "pki" / "ca.crt")
        with httpx.Client(verify=ca, headers={"Authorization": f"Bearer {token}"}) as c:

            def sa_adds() -> float:
                fams = _families(c.get(f"{url}/metrics").text)
                return sum(
                    v for _, lb, v in fams.get("workqueue_adds", []) if lb == {"name": "serviceaccount"}
                )

            before = sa_adds()
            c.post(f"{url}/api/v1/namespaces", json={"metadata": {"name": "obs"}}).raise_for_status()
            pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}}
            c.post(f"{url}/api/v1/namespaces/obs/pods", json=pod).raise_for_status()  # no node for it
            # the service account controller's queue takes the new namespace (its default account)
            wait_for(
                lambda: sa_adds() > before, timeout=30, what="workqueue_adds_total{name=serviceaccount} up"
            )
            fams = _families(c.get(f"{url}/metrics").text)
            created = [
                v
                for n, lb, v in fams["apiserver_request"]
                if n == "apiserver_request_total"
                and lb.get("verb") == "POST"
                and lb.get("resource") == "namespaces"
            ]
            assert created and created[0] >= 1
            assert "process_resident_memory_bytes" in fams and "apiserver_request_duration_seconds" in fams
            assert "apiserver_flowcontrol_current_executing_requests" in fams

            def unschedulable() -> list[float]:
                fams = _families(c.get(f"{url}/metrics").text)
                return [
                    v
                    for _, lb, v in fams.get("scheduler_pending_pods", [])
                    if lb == {"queue": "unschedulable"} and v
                ]

            assert wait_for(unschedulable, timeout=30, what="the pod pending as unschedulable") == [1.0]
            attempts = _families(c.get(f"{url}/metrics").text)["scheduler_schedule_attempts"]
            assert [lb["result"] for _, lb, v in attempts if v >= 1] == ["unschedulable"]
        anonymous = httpx.get(f"{url}/metrics", verify=ca)
        assert anonymous.status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    logged = [
        json.loads(ln)
        for ln in lines
        if not ln.startswith(("hypernetes is up", "  ", "hypernetes: stopping"))
    ]
    assert logged and all({"time", "level", "logger", "msg"} <= set(x) for x in logged)
    assert any(x["msg"].startswith("controllers running:") for x in logged)


async def test_a_component_alone_serves_the_process_registry(tmp_path: Path) -> None:
    """`node join --metrics-bind-address`: the process's registry over plain HTTP, with what
    is attached to it at the time of the scrape."""
    from hypernetes.cli.main import build_parser
    from hypernetes.cli.observability import serve_metrics
    from hypernetes.metrics import attached
    from hypernetes.node.metrics import NodeMetrics

    args = build_parser().parse_args(
        ["node", "join", "https://127.0.0.1:6443", "--token", "x", "--metrics-bind-address", "127.0.0.1:0"]
    )
    assert args.metrics_bind_address == ("127.0.0.1", 0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["node", "join", "https://h:1", "--token", "x", "--metrics-bind-address", "10249"]
        )
    runner = await serve_metrics(args)
    try:
        port = runner.addresses[0][1]
        node = NodeMetrics()
        node.running_pods.set(3)
        async with httpx.AsyncClient() as c:
            with attached(node.registry):
                text = (await c.get(f"http://127.0.0.1:{port}/metrics")).text
                during = _families(text)
            assert "_created" not in text  # as upstream's exposition: no creation-time series
            after = _families((await c.get(f"http://127.0.0.1:{port}/metrics")).text)
        assert during["kubelet_running_pods"] == [("kubelet_running_pods", {}, 3.0)]
        assert "kubelet_running_pods" not in after and "process_cpu_seconds" in after
    finally:
        await runner.cleanup()
