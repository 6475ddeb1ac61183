"""FHIR search: index entries built at write time, queries compiled from the R4 digest, paging."""

from fhir_server.search.executor import Searcher
from fhir_server.search.request import SearchRequest, SearchResult
from fhir_server.search.index import build_index
from fhir_server.search.parameters import Parameter, Parameters, parameters_for

__all__ = ["Parameter", "Parameters", "SearchRequest", "SearchResult", "Searcher", "build_index", "parameters_for"]
