"""calipso: a FHIR R4 server for the home-care liaison notebook."""

__version__ = "0.1.0"
