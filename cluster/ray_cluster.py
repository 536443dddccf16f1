"""Starting or joining Ray, and placing a runtime's actors on it.

>>> connect()                                   # a local Ray with this machine's cores, on loopback
>>> connect("ray://head:10001")                 # or join an existing cluster
>>> router = place_router(settings, partitions=1024)
>>> hosts = place_hosts(settings)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import ray
from ray._private import ray_constants
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from parlour.actors.delivery import RetryPolicy
from parlour.actors.remote import NAMESPACE, SUPERVISED, DeliveryActor, HostActor, HostSettings, RouterActor, handle

if TYPE_CHECKING:
    from parlour.cluster.node_server import Serving


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Start a local Ray (``address`` None) or join the cluster at ``address``. Returns
    whether this call started Ray (and so whether :func:`disconnect` should stop it)."""
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"namespace": NAMESPACE, "logging_level": "WARNING", "log_to_driver": True}
    if address:
        ray.init(address=address, **options)
    else:
        with _loopback_only():
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **options)
    return True


@contextmanager
def _loopback_only() -> Iterator[None]:
    """While a local Ray starts, keep its servers (GCS, raylet, workers, agents) on 127.0.0.1.

    By default they listen on every interface, and Ray maps even an explicit ``127.0.0.1``
    node address to the machine's routable one, unless "clusters" are switched off, as Ray
    does on macOS and Windows (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). That switch is read
    once when ray is imported: it is set on the imported module for this process, and in the
    environment the processes Ray starts inherit. A local node is never joined by another:
    to run a cluster, start it with ``ray start`` and give parlour its address."""
    variable = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved = os.environ.get(variable), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[variable] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = saved[0]
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]


def disconnect() -> None:
    ray.shutdown()


def place_router(settings: HostSettings, partitions: int) -> ray.actor.ActorHandle:
    """The router of ``settings.names``: found if it runs, created if not."""
    return handle(RouterActor.options(name=settings.names.router, get_if_exists=True, **SUPERVISED).remote(
        settings.store_url, partitions, settings.names.all_hosts))


def place_hosts(settings: HostSettings) -> dict[str, ray.actor.ActorHandle]:
    """The hosts of ``settings.names``: found if they run, created if not."""
    return {name: handle(HostActor.options(name=name, get_if_exists=True, **SUPERVISED).remote(name, settings))
            for name in settings.names.all_hosts}


def place_servers(settings: HostSettings, serving: Serving) -> dict[str, ray.actor.ActorHandle]:
    """The node servers of ``settings.names`` on this node (the driver's): found if they run,
    created if not. Each is pinned to the node (node affinity, not soft): its port is this
    node's, and a restart must bind it here again."""
    from parlour.cluster.node_server import NodeServerActor  # it imports the gateway: only a driver needs it

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    options = {"scheduling_strategy": here, "get_if_exists": True, **SUPERVISED}
    return {name: handle(NodeServerActor.options(name=name, **options).remote(name, settings, serving))
            for name in settings.names.all_hosts}


def place_delivery(settings: HostSettings, secrets_key: str, policy: RetryPolicy) -> ray.actor.ActorHandle:
    """The delivery supervisor of ``settings.names``: found if it runs, created if not."""
    return handle(DeliveryActor.options(name=settings.names.delivery, get_if_exists=True, **SUPERVISED).remote(
        secrets_key, policy, settings))


def kill(*actors: ray.actor.ActorHandle) -> None:
    """End ``actors`` for good (no restart)."""
    for actor in actors:
        ray.kill(actor, no_restart=True)
