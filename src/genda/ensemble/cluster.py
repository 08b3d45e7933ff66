"""Connecting to Ray: a running cluster when one is named, else a local one we own.

``ray_session`` is the only place genda calls ``ray.init``. The rules:

- an address (the argument, else ``RAY_ADDRESS``) connects to that cluster,
  and leaving only disconnects this driver: a cluster we did not start is
  never shut down;
- a Ray already initialised in this process (a notebook, a test, a Prefect
  task) is used as it is and left running;
- otherwise a local cluster is started with the CPUs asked for, and shut
  down on leaving. Its dashboard, when asked for, listens on 127.0.0.1 only.
  Ray 2.60 binds its own gRPC ports on every interface (it rewrites a
  loopback node address to the host's), so the cluster keeps Ray's token
  authentication, on by default: genda never turns it off.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from genda.errors import GendaError


class ClusterConnectionError(GendaError, ConnectionError):
    """No Ray cluster answers at the given address, or the address is malformed."""


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


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast when no Ray cluster answers at ``host:port``; Ray itself retries for minutes.

    ``None`` (start a local cluster) and ``"auto"`` (Ray finds the local one)
    are not checked.

    Raises:
        ConnectionError: nothing accepts connections at the address, or it is malformed.
    """
    import socket

    if address is None or address == "auto":
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ClusterConnectionError(f"Ray address {address!r} is not host:port")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as error:
        raise ClusterConnectionError(
            f"no Ray cluster answers at {address} ({error}); start one (`ray start --head`) "
            "or leave --ray-address and RAY_ADDRESS unset to start a local one"
        ) from None


@contextmanager
def ray_session(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    dashboard: bool = False,
    temp_dir: str | None = None,
) -> Iterator[RaySession]:
    """Attach this process to Ray for the block (module docstring for the rules).

    Args:
        address: ``host:port`` of a running cluster, or ``"auto"``; ``None``
            reads ``RAY_ADDRESS`` and starts a local cluster without it.
        num_cpus, num_gpus: resources of a local cluster (``None``: the machine's).
        dashboard: start the dashboard of a local cluster (on 127.0.0.1).
        temp_dir: Ray's session directory for a local cluster.
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
            ray.init(
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=dashboard,
                dashboard_host="127.0.0.1",
                logging_level="WARNING",
                _temp_dir=temp_dir,
            )
            owned = True
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


__all__ = ["RaySession", "check_reachable", "ray_address", "ray_session"]
