"""Connecting to Ray: a running cluster when one is named, else a local one we own.

``ray_session`` is the only place genda calls ``ray.init``. The rules:

- an address (the argument, else ``RAY_ADDRESS``) connects to that cluster,
  and leaving only disconnects this driver: a cluster we did not start is
  never shut down. The address must answer as a Ray GCS within seconds
  (:func:`check_reachable`): Ray itself would retry for minutes;
- a Ray already initialised in this process (a notebook, a test, a Prefect
  task) is used as it is and left running;
- otherwise a local cluster is started with the CPUs asked for, and shut
  down on leaving. Its dashboard, when asked for, listens on 127.0.0.1 only.
  Ray 2.60 binds its own gRPC ports on every interface (it rewrites a
  loopback node address to the host's), so the cluster keeps Ray's token
  authentication, on by default. With authentication turned off through
  ``RAY_AUTH_MODE`` genda refuses to start one unless the ``insecure``
  setting (or ``GENDA_RAY_INSECURE=1``) allows it, and then warns. Its
  session directory (logs, sockets) lies in a folder only this user can
  enter (:func:`ray_temp_dir`), not in the shared ``/tmp/ray``.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from genda.errors import GendaError, InvalidValueError

INSECURE_ENV = "GENDA_RAY_INSECURE"
"""Environment setting that allows a local cluster without token authentication (``1``)."""

RAY_TEMP_DIR_MAX = (
    107 - len("/session_2000-01-01_00-00-00_000000_") - 7 - len("/sockets/plasma_store.99")
)
"""Longest Ray temp dir (bytes) whose socket paths fit in AF_UNIX's 107 bytes.

Ray puts ``<temp>/session_<date>_<pid>/sockets/plasma_store[.N]`` there
(pids up to 7 digits) and refuses to start when a socket path is longer.
"""

_GCS_PROBE_METHOD = "/ray.rpc.NodeInfoGcsService/GetClusterId"

logger = logging.getLogger(__name__)


class ClusterConnectionError(GendaError, ConnectionError):
    """No Ray cluster answers at the given address, or the address is malformed."""


class InsecureClusterError(GendaError, PermissionError):
    """A local Ray cluster would start without token authentication and was not allowed to."""


@dataclass(frozen=True)
class RaySession:
    """How this driver is attached to Ray.

    Attributes:
        address: the cluster's GCS address.
        started: whether this session started the cluster (and will shut it down).
        cpus, gpus: the cluster's total resources.
    """

    address: str
    started: bool
    cpus: float
    gpus: float


def ray_address(address: str | None) -> str | None:
    """The cluster to connect to: ``address``, else ``RAY_ADDRESS``, else ``None`` (start one)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def token_auth_disabled() -> bool:
    """Whether a local cluster started now would run without Ray's token authentication.

    Ray 2.60 turns token authentication on for a new local cluster unless
    ``RAY_AUTH_MODE`` is set to something other than ``token``.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    return mode is not None and mode.strip().lower() != "token"


def insecure_allowed(insecure: bool = False) -> bool:
    """Whether a local cluster may run without authentication: ``insecure`` or ``GENDA_RAY_INSECURE``."""
    value = os.environ.get(INSECURE_ENV, "").strip().lower()
    return insecure or value in ("1", "true", "yes", "on")


def check_local_cluster(insecure: bool = False) -> None:
    """Refuse to start a local cluster without token authentication unless it is allowed.

    Raises:
        InsecureClusterError: ``RAY_AUTH_MODE`` turns authentication off and
            neither ``insecure`` nor ``GENDA_RAY_INSECURE=1`` allows it.
    """
    if token_auth_disabled() and not insecure_allowed(insecure):
        mode = os.environ.get("RAY_AUTH_MODE")
        raise InsecureClusterError(
            f"RAY_AUTH_MODE={mode} turns Ray's token authentication off, and a local Ray "
            "cluster listens on every network interface of this host, so anyone who reaches "
            "its ports can run code as you; unset RAY_AUTH_MODE to keep authentication on, "
            f"or allow it on a firewalled machine with the insecure setting ({INSECURE_ENV}=1)"
        )


def check_cluster(address: str | None, *, insecure: bool = False) -> None:
    """Everything :func:`ray_session` would refuse, checked before anything is written.

    An address must answer as a Ray GCS (:func:`check_reachable`), even when
    Ray is already initialised here: a named address that is not a cluster
    is a mistake either way. Without one, a local cluster must be allowed
    (:func:`check_local_cluster`), unless Ray is already initialised in this
    process (``ray_session`` then uses it and starts nothing).
    """
    if address is not None:
        check_reachable(address)
        return
    ray = sys.modules.get("ray")  # not imported: nothing can be initialised
    if ray is None or not ray.is_initialized():
        check_local_cluster(insecure)


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast when no Ray cluster answers at ``host:port``; Ray itself retries for minutes.

    A TCP connection is not enough: any server (a web server, a database)
    accepts one, and Ray then waits for minutes for a GCS that never
    answers. So the address must also answer one gRPC call of Ray's GCS
    (``GetClusterId``) within ``timeout``. A GCS with token authentication
    that rejects the call without a token still counts as a GCS (``ray.init``
    sends the token). A Ray client address (``ray://``) points at Ray's
    client server, not the GCS: any gRPC answer counts there.

    ``None`` (start a local cluster) and ``"auto"`` (Ray finds the local one)
    are not checked.

    Raises:
        ClusterConnectionError: the address is malformed, nothing accepts
            connections there, or what answers is not a Ray cluster.
    """
    import socket

    if address is None or address == "auto":
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterConnectionError(
            f"Ray address {address!r} is not host:port (e.g. 10.0.0.5:6379)"
        )
    advice = (
        "start one (`ray start --head`) or leave the address and RAY_ADDRESS unset to "
        "start a local one"
    )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as error:
        raise ClusterConnectionError(
            f"no Ray cluster answers at {address} ({error}); {advice}"
        ) from None
    from ray.exceptions import AuthenticationError

    try:
        problem = _grpc_probe(target, timeout, client=address.startswith("ray://"))
    except AuthenticationError as error:
        # Ray's channel refuses to call without the token it is told to send.
        raise ClusterConnectionError(
            f"cannot authenticate to a Ray cluster at {address}: {error.message}"
        ) from None
    if problem is not None:
        raise ClusterConnectionError(
            f"{address} accepts connections but is not a Ray cluster ({problem}); give the "
            "head's GCS address (port 6379 unless `ray start --port` set another)"
        )


def _grpc_probe(target: str, timeout: float, *, client: bool) -> str | None:
    """What is wrong with ``target`` as a Ray GCS (or client server), or ``None`` if it is one.

    One unary call with a deadline, over the channel Ray itself uses (TLS
    when ``RAY_USE_TLS`` says so): a silent server runs into the deadline,
    a server that does not speak HTTP/2 fails at once, another gRPC server
    answers ``UNIMPLEMENTED``.
    """
    import grpc

    try:
        from ray._private.gcs_utils import create_gcs_channel

        channel = create_gcs_channel(target)
    except ImportError:  # a Ray without this helper: a plain channel still tells a GCS apart
        channel = grpc.insecure_channel(target)
    try:
        call = channel.unary_unary(_GCS_PROBE_METHOD)
        call(b"", timeout=timeout)  # an empty request is a valid GetClusterIdRequest
        return None
    except grpc.RpcError as error:
        code = error.code()
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return None  # a GCS that wants a token; ray.init brings it
        if client and code not in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ):
            return None  # Ray's client server speaks gRPC but not the GCS's methods
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"silent for {timeout:g} s"
        if code == grpc.StatusCode.UNAVAILABLE:
            return "it does not speak gRPC"
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return "a gRPC server without Ray's GCS service, such as a raylet port"
        return f"gRPC status {code.name}"
    finally:
        channel.close()


def _private_dir(path: Path) -> bool:
    """Make ``path`` a folder that only this user can enter (0700); False where it cannot be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
        info = path.lstat()
        getuid = getattr(os, "getuid", None)
        if not stat.S_ISDIR(info.st_mode) or (getuid is not None and info.st_uid != getuid()):
            return False  # a link or someone else's folder: not ours to trust
        if stat.S_IMODE(info.st_mode) != 0o700:
            path.chmod(0o700)
    except OSError:
        return False
    return True


def ray_temp_dir() -> str:
    """Ray's temp dir for a local cluster genda starts, inside a folder only this user can enter.

    ``$XDG_CACHE_HOME/genda/ray/tmp`` (``~/.cache`` by default): the cache
    lasts as long as a long-running ``genda serve`` (``XDG_RUNTIME_DIR`` is
    removed at logout) and is the user's own. Ray makes the temp dir itself
    world-writable (0777), so privacy comes from its parent (0700). Where
    that path is too long for Ray's socket paths (:data:`RAY_TEMP_DIR_MAX`)
    or the folder cannot be made private, a fresh ``mkdtemp`` folder (0700)
    in the system temp dir is used, and ``/tmp`` when even that is too long.
    """
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    private = Path(cache).expanduser() / "genda" / "ray"
    candidate = private / "tmp"
    if len(str(candidate).encode()) <= RAY_TEMP_DIR_MAX and _private_dir(private):
        return str(candidate)
    for parent in (tempfile.gettempdir(), "/tmp"):
        # mkdtemp adds 8 characters and "/tmp" 4 to the prefix's path.
        if len(os.path.join(parent, "genda-ray-xxxxxxxx", "tmp").encode()) <= RAY_TEMP_DIR_MAX:
            return os.path.join(tempfile.mkdtemp(prefix="genda-ray-", dir=parent), "tmp")
    raise InvalidValueError(
        f"TMPDIR={tempfile.gettempdir()} is too long for Ray's socket paths "
        f"(at most {RAY_TEMP_DIR_MAX - 23} characters)"
    )


def _warn_exposed(gcs_address: str) -> None:
    """Say loudly which ports of an unauthenticated local cluster anyone on the network can use."""
    import ray

    ports = [f"GCS {gcs_address}"]
    for node in ray.nodes():
        host = node.get("NodeManagerAddress", "?")
        for label, key in (
            ("raylet", "NodeManagerPort"),
            ("object manager", "ObjectManagerPort"),
            ("metrics", "MetricsExportPort"),
            ("dashboard agent", "DashboardAgentListenPort"),
            ("runtime env agent", "RuntimeEnvAgentPort"),
        ):
            if node.get(key):
                ports.append(f"{label} {host}:{node[key]}")
    logger.warning(
        "INSECURE: this local Ray cluster runs without token authentication (RAY_AUTH_MODE=%s) "
        "and listens on every network interface: %s, plus worker ports. Anyone who can reach "
        "them can run code as this user; use it only behind a firewall (docs/deploy.md).",
        os.environ.get("RAY_AUTH_MODE"),
        ", ".join(ports),
    )


@contextmanager
def ray_session(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    dashboard: bool = False,
    temp_dir: str | None = None,
    insecure: bool = False,
) -> Iterator[RaySession]:
    """Attach this process to Ray for the block (module docstring for the rules).

    Args:
        address: ``host:port`` of a running cluster, or ``"auto"``; ``None``
            reads ``RAY_ADDRESS`` and starts a local cluster without it.
        num_cpus, num_gpus: resources of a local cluster (``None``: the machine's).
        dashboard: start the dashboard of a local cluster (on 127.0.0.1).
        temp_dir: Ray's temp dir for a local cluster (default: :func:`ray_temp_dir`).
        insecure: allow a local cluster without token authentication
            (``RAY_AUTH_MODE=disabled``); ``GENDA_RAY_INSECURE=1`` does the same.

    Raises:
        ClusterConnectionError: no Ray cluster answers at the address.
        InsecureClusterError: a local cluster without authentication, not allowed.
    """
    import ray

    target = ray_address(address)
    owned = connected = False
    if not ray.is_initialized():
        if target is not None:
            check_reachable(target)
            ray.init(address=target, logging_level="WARNING")
            connected = True
        else:
            check_local_cluster(insecure)
            ray.init(
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=dashboard,
                dashboard_host="127.0.0.1",
                logging_level="WARNING",
                _temp_dir=temp_dir or ray_temp_dir(),
            )
            owned = True
            if token_auth_disabled():
                _warn_exposed(ray.get_runtime_context().gcs_address)
    try:
        resources = ray.cluster_resources()
        yield RaySession(
            address=ray.get_runtime_context().gcs_address,
            started=owned,
            cpus=float(resources.get("CPU", 0.0)),
            gpus=float(resources.get("GPU", 0.0)),
        )
    finally:
        # ray.shutdown() of a driver connected to a running cluster only
        # disconnects it; of a local cluster it started, it stops the cluster.
        if owned or connected:
            ray.shutdown()


__all__ = [
    "INSECURE_ENV",
    "ClusterConnectionError",
    "InsecureClusterError",
    "RaySession",
    "check_cluster",
    "check_local_cluster",
    "check_reachable",
    "insecure_allowed",
    "ray_address",
    "ray_session",
    "ray_temp_dir",
    "token_auth_disabled",
]
