"""Database access: the embedded database launcher and the resource store."""

from fhir_server.storage.embedded import EmbeddedDatabase, EmbeddedDatabaseError
from fhir_server.storage.store import Current, ResourceStore, Version, VersionConflict, Write

__all__ = [
    "Current",
    "EmbeddedDatabase",
    "EmbeddedDatabaseError",
    "ResourceStore",
    "Version",
    "VersionConflict",
    "Write",
]
