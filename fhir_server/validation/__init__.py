"""Resource validation: structural today; profiles come with the Implementation Guide."""

from fhir_server.validation.structural import StructuralValidator

__all__ = ["StructuralValidator"]
