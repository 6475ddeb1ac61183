"""The HTTP layer: routes, content negotiation, OperationOutcome errors. No storage here."""

from fhir_server.rest.routes import ROUTES, FhirRoute, base_url, guarded

__all__ = ["ROUTES", "FhirRoute", "base_url", "guarded"]
