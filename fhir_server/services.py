"""The one composition root: what `calipso serve`, `calipso mllp` and `calipso inbox` run on.

Each of them used to build its own engine and bridge, and they drifted: the inbox's replay ran
without the profile enforcement the server applied, and without the audit trail. Now the
database client (version checked), the store (indexes ensured), the engine (as the settings
configure it), the audit trail and the bridge are built here, once, the same way for all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from fhir_server.bulk.files import ExportFiles
from fhir_server.bulk.runner import RunSettings
from fhir_server.bulk.worker import ExportWorker, WorkerSettings
from fhir_server.engine import Engine
from fhir_server.security.audit import AuditTrail, engine_committer
from fhir_server.security.policy import Access
from fhir_server.security.tokens import Claims
from fhir_server.settings import Settings
from fhir_server.spec import load_spec
from fhir_server.storage.connection import connect
from fhir_server.storage.exports import ExportStore
from fhir_server.storage.store import ResourceStore
from fhir_server.storage.notifications import NotificationStore
from fhir_server.storage.versions import check_server, is_embedded
from fhir_server.subscriptions.dispatcher import DispatchSettings, Dispatcher
from fhir_server.subscriptions.endpoints import EndpointPolicy
from fhir_server.subscriptions.rules import SubscriptionRule
from hl7v2_bridge.bridge import Bridge


@dataclass
class Services:
    client: Any
    store: ResourceStore
    engine: Engine
    audit: AuditTrail | None
    bridge: Bridge

    async def close(self) -> None:
        if self.audit is not None:
            await self.audit.stop()
        await self.client.close()


async def build_services(settings: Settings, role: str = "api") -> Services:
    """Everything but the listeners; `role` names the audit journal ("api", "mllp", "inbox")."""
    client = connect(settings.mongodb_uri or "")
    try:
        server = await check_server(client)
        store = ResourceStore(client, settings.database)
        await store.ensure_indexes()
        engine = Engine(store, load_spec(), enforce_profiles=settings.enforce_profiles)
        engine.searcher.embedded_strategy = is_embedded(server)
        engine.type_rules["Subscription"] = SubscriptionRule(engine.spec.is_resource_type, EndpointPolicy(settings.subscription_endpoints))
        await NotificationStore(store).ensure_indexes()
        await ExportStore(store).ensure_indexes()
        audit = AuditTrail(engine_committer(engine), settings.data_dir / "audit", role=role) if settings.audit else None
        if audit is not None:
            await audit.start()
    except BaseException:
        await client.close()
        raise
    return Services(client, store, engine, audit, Bridge(engine, settings.hl7_default_charset))


def build_dispatcher(settings: Settings, services: Services, access_of: Callable[[Claims | None], Awaitable[Access]]) -> Dispatcher:
    """The subscription dispatcher of an API node (`access_of`: the gate's, to decide a
    subscriber's access at each send)."""
    base = settings.public_base_url or f"http://{settings.host}:{settings.port}/fhir"
    dispatch = DispatchSettings(base_url=base.rstrip("/"), max_attempts=settings.subscription_max_attempts,
                                max_retry_seconds=settings.subscription_retry_cap_seconds,
                                lease_seconds=settings.subscription_lease_seconds)
    return Dispatcher(services.engine, NotificationStore(services.store), access_of, EndpointPolicy(settings.subscription_endpoints),
                      dispatch, services.audit)


def build_export_worker(settings: Settings, services: Services, access_of: Callable[[Claims | None], Awaitable[Access]]) -> ExportWorker:
    """The `$export` worker of an API node (`access_of`: the gate's, to decide a job owner's
    access when its job runs); files under the data folder's `exports/`."""
    run = RunSettings(page_size=settings.export_page_size, lease_seconds=settings.export_lease_seconds,
                      max_per_second=settings.export_max_per_second, share_while_serving=settings.export_share_percent / 100)
    return ExportWorker(services.engine, ExportStore(services.store), ExportFiles(settings.data_dir / "exports"), access_of,
                        WorkerSettings(run, settings.export_retention_seconds), services.audit)


__all__ = ["Services", "build_dispatcher", "build_export_worker", "build_services"]
