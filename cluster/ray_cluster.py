"""Starting or joining Ray, and placing a runtime's actors on it.

>>> connect()                                   # a local Ray with this machine's cores
>>> connect("ray://head:10001")                 # or join an existing cluster
>>> router = place_router(settings, partitions=1024)
>>> hosts = place_hosts(settings)
"""

from __future__ import annotations

import os

import ray
from parlour.actors.delivery import RetryPolicy
from parlour.actors.remote import NAMESPACE, DeliveryActor, HostActor, HostSettings, RouterActor


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Start a local Ray (``address`` None) or join the cluster at ``address``. Returns
    whether this call started Ray (and so whether :func:`disconnect` should stop it)."""
    if ray.is_initialized():
        return False
    options = {"namespace": NAMESPACE, "logging_level": "WARNING", "log_to_driver": True}
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **options)
    return True


def disconnect() -> None:
    ray.shutdown()


def place_router(settings: HostSettings, partitions: int) -> ray.actor.ActorHandle:
    """The router of ``settings.names``: found if it runs, created if not."""
    return RouterActor.options(name=settings.names.router, get_if_exists=True).remote(
        settings.store_url, partitions, settings.names.all_hosts)


def place_hosts(settings: HostSettings) -> dict[str, ray.actor.ActorHandle]:
    """The hosts of ``settings.names``: found if they run, created if not."""
    return {name: HostActor.options(name=name, get_if_exists=True).remote(name, settings)
            for name in settings.names.all_hosts}


def place_delivery(settings: HostSettings, secrets_key: str, policy: RetryPolicy) -> ray.actor.ActorHandle:
    """The delivery supervisor of ``settings.names``: found if it runs, created if not."""
    return DeliveryActor.options(name=settings.names.delivery, get_if_exists=True).remote(
        settings.store_url, secrets_key, policy, settings.log_level, settings.log_format, settings.egress)


def kill(*actors: ray.actor.ActorHandle) -> None:
    """End ``actors`` for good (no restart)."""
    for actor in actors:
        ray.kill(actor, no_restart=True)
