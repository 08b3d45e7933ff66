"""Hostile Ray settings: an unauthenticated local cluster, addresses that are not Ray.

A local cluster without token authentication is refused unless allowed
(``insecure``, ``GENDA_RAY_INSECURE=1``), and warns when allowed; its session
folder is private to the user. An address that is malformed, closed, or open
but not a Ray GCS fails within seconds. Each refusal asserts the message, the
exit code and that nothing was written.
"""

from __future__ import annotations

import http.server
import logging
import os
import shutil
import socket
import stat
import tempfile
import threading
import time as clock
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import pytest
from hostile_checks import refused
from typer.testing import CliRunner

from genda.distributed import cluster
from genda.distributed.cluster import (
    RAY_TEMP_DIR_MAX,
    InsecureClusterError,
    check_local_cluster,
    ray_session,
    ray_temp_dir,
)

ray = pytest.importorskip("ray")
runner = CliRunner()
TIME = "2000-02-10T12:00"


@pytest.fixture(autouse=True)
def no_auth(monkeypatch) -> None:
    """Authentication off, no opt-in, no address, no Ray attached: the hostile setting."""
    if ray.is_initialized():  # a Ray left by another module would be reused, not started
        ray.shutdown()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    for name in ("GENDA_RAY_INSECURE", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh folder under /tmp, short enough for Ray's socket paths; removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="gc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def assimilate(out: Path, *extra: str) -> list[str]:
    """``genda assimilate`` of the shipped prior (no observations) on 2 Ray workers."""
    return [
        *("assimilate", "--checkpoint", "default", "--time", TIME, "--out", str(out)),
        *("--members", "2", "--steps", "2", "--workers", "2", "--no-progress", *extra),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["silent socket", "http server", "other grpc server"])
def not_ray(request) -> Iterator[str]:
    """An open port on 127.0.0.1 that is not a Ray GCS: its ``host:port``."""
    if request.param == "silent socket":  # accepts, reads nothing, answers nothing
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        held: list[socket.socket] = []
        threading.Thread(
            target=lambda: [held.append(server.accept()[0]) for _ in range(8)], daemon=True
        ).start()
        yield f"127.0.0.1:{server.getsockname()[1]}"
        server.close()
        for conn in held:
            conn.close()
    elif request.param == "http server":
        handler = http.server.SimpleHTTPRequestHandler
        handler.log_message = lambda *args: None  # type: ignore[method-assign]
        web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=web.serve_forever, daemon=True).start()
        yield f"127.0.0.1:{web.server_address[1]}"
        web.shutdown()
        web.server_close()
    else:  # speaks gRPC, has no GCS service (as a raylet port)
        import grpc

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        yield f"127.0.0.1:{port}"
        server.stop(grace=None)


# ------------------------------------------------------------------ unauthenticated local clusters
def test_assimilate_refuses_a_local_cluster_without_authentication(tmp_path: Path) -> None:
    out = tmp_path / "new.zarr"
    text = refused(assimilate(out), "RAY_AUTH_MODE=disabled", "insecure", "GENDA_RAY_INSECURE=1")
    assert "every network interface" in text
    assert list(tmp_path.iterdir()) == []
    assert not ray.is_initialized()


def test_demo_refuses_before_it_simulates_anything(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    refused(["demo", "--out", str(out), "--workers", "2"], "insecure", "GENDA_RAY_INSECURE=1")
    assert not out.exists()
    assert not ray.is_initialized()


def test_the_library_refuses_and_only_the_setting_allows(monkeypatch) -> None:
    with pytest.raises(InsecureClusterError, match="GENDA_RAY_INSECURE=1"):
        with ray_session(num_cpus=1):
            pass
    assert not ray.is_initialized()
    check_local_cluster(insecure=True)  # the library setting
    monkeypatch.setenv("GENDA_RAY_INSECURE", "1")
    check_local_cluster()  # the environment setting
    monkeypatch.delenv("GENDA_RAY_INSECURE")
    for mode in (None, "token", "TOKEN"):  # authentication on: nothing to allow
        if mode is None:
            monkeypatch.delenv("RAY_AUTH_MODE")
        else:
            monkeypatch.setenv("RAY_AUTH_MODE", mode)
        check_local_cluster()


@pytest.mark.slow
def test_an_allowed_cluster_warns_and_keeps_its_session_private(
    monkeypatch, caplog: pytest.LogCaptureFixture, short_dir: Path
) -> None:
    cache = short_dir
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("GENDA_RAY_INSECURE", "1")
    with caplog.at_level(logging.WARNING, logger="genda.distributed.cluster"):
        with ray_session(num_cpus=1) as session:
            assert session.started
            temp = Path(ray._private.worker._global_node.get_session_dir_path()).parent
    assert not ray.is_initialized()
    text = caplog.text
    assert "INSECURE" in text and "every network interface" in text, text
    assert f"GCS {session.address}" in text and "raylet" in text and "metrics" in text, text
    private = cache / "genda" / "ray"
    assert temp == private / "tmp" and not str(temp).startswith("/tmp/ray")
    info = private.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    assert any(p.name.startswith("session_2") for p in temp.iterdir())


def test_a_session_folder_too_long_for_sockets_falls_back_to_a_private_temp_dir(
    monkeypatch, tmp_path: Path
) -> None:
    deep = tmp_path / ("x" * 60)
    monkeypatch.setenv("XDG_CACHE_HOME", str(deep))
    temp = Path(ray_temp_dir())
    assert len(str(temp).encode()) <= RAY_TEMP_DIR_MAX
    info = temp.parent.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    assert not deep.exists()  # nothing made where it could not be used
    temp.parent.rmdir()


def test_a_planted_link_in_place_of_the_session_folder_is_not_followed(
    monkeypatch, short_dir: Path
) -> None:
    cache, elsewhere = short_dir / "cache", short_dir / "elsewhere"
    cache.mkdir()
    elsewhere.mkdir()
    elsewhere.chmod(0o777)
    (cache / "genda").mkdir()
    (cache / "genda" / "ray").symlink_to(elsewhere)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    temp = Path(ray_temp_dir())
    assert (
        not str(temp).startswith(str(cache)) and stat.S_IMODE(temp.parent.stat().st_mode) == 0o700
    )
    assert list(elsewhere.iterdir()) == [] and stat.S_IMODE(elsewhere.stat().st_mode) == 0o777
    temp.parent.rmdir()


# ------------------------------------------------------------------ addresses that are not Ray
@pytest.mark.slow
def test_an_open_port_that_is_not_ray_fails_within_seconds(not_ray: str, tmp_path: Path) -> None:
    out = tmp_path / "new.zarr"
    started = clock.monotonic()
    refused(assimilate(out, "--ray-address", not_ray), not_ray, "not a Ray cluster", "6379")
    assert clock.monotonic() - started < 20  # Ray alone waits for minutes
    assert list(tmp_path.iterdir()) == []
    assert not ray.is_initialized()


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:port", "127.0.0.1:99999", ":6379"])
def test_a_malformed_address_is_named(address: str, tmp_path: Path) -> None:
    refused(assimilate(tmp_path / "new.zarr", "--ray-address", address), address, "host:port")
    assert list(tmp_path.iterdir()) == []


def test_a_closed_port_is_named(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    refused(assimilate(tmp_path / "new.zarr", "--ray-address", address), address, "no Ray cluster")
    assert list(tmp_path.iterdir()) == []


def test_the_probe_accepts_a_token_protected_gcs(monkeypatch) -> None:
    """A gRPC server that answers UNAUTHENTICATED is a GCS that wants a token: ray.init brings it."""
    import grpc

    def deny(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "InvalidAuthToken")

    handler = grpc.method_handlers_generic_handler(
        "ray.rpc.NodeInfoGcsService", {"GetClusterId": grpc.unary_unary_rpc_method_handler(deny)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        cluster.check_reachable(f"127.0.0.1:{port}", timeout=5)
    finally:
        server.stop(grace=None)


# ------------------------------------------------------------------ the cycle path
@pytest.mark.parametrize("where", ["local cluster", "address not ray"])
@pytest.mark.slow
def test_a_cycle_checks_its_cluster_before_any_store(
    where: str, tmp_path: Path, tmp_path_factory, monkeypatch
) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{web.server_address[1]}"
    ray_line = (
        "ray: {workers: 2}"
        if where == "local cluster"
        else f"ray: {{workers: 2, address: '{address}'}}"
    )
    config = tmp_path / "cycle.yaml"
    config.write_text(
        "checkpoint: default\nobservations: obs-{time:%H}.parquet\n"
        f"start: {TIME}\nend: {TIME}\nmembers: 2\nsteps: 2\nstore: cycle.zarr\n{ray_line}\n"
    )
    try:
        if where == "local cluster":
            refused(["cycle", "--config", str(config)], "insecure", "GENDA_RAY_INSECURE=1")
        else:
            refused(["cycle", "--config", str(config)], address, "not a Ray cluster")
    finally:
        web.shutdown()
        web.server_close()
    assert list(tmp_path.iterdir()) == [config]
    assert not ray.is_initialized()
