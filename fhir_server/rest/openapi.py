"""An OpenAPI 3.1 description of the FHIR API, generated from the CapabilityStatement: each
interaction the statement declares for a type becomes an operation, each declared search
parameter a query parameter. Served at `[base]/openapi.json` for API tooling and fuzzers
(tests/test_openapi.py runs schemathesis against it).

Bodies are described loosely (an object whose `resourceType` is the type): the R4 structure
is the FHIR validator's business, and a fuzzer is meant to send what the schema does not
promise. Every error answer is an OperationOutcome.
"""

from __future__ import annotations

from typing import Any

FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
ID_PATTERN = "^[A-Za-z0-9\\-\\.]{1,64}$"
SEARCH_TYPES: dict[str, dict[str, Any]] = {"number": {"type": "string"}, "date": {"type": "string"}, "string": {"type": "string"},
                "token": {"type": "string"}, "reference": {"type": "string"}, "composite": {"type": "string"},
                "quantity": {"type": "string"}, "uri": {"type": "string"}, "special": {"type": "string"}}
RESULT_PARAMETERS: list[tuple[str, dict[str, Any]]] = [
    ("_count", {"type": "integer", "minimum": 0}),
    ("_sort", {"type": "string"}),
    ("_total", {"type": "string", "enum": ["none", "estimate", "accurate"]}),
    ("_summary", {"type": "string", "enum": ["true", "false", "text", "data", "count"]}),
    ("_include", {"type": "string"}),
    ("_revinclude", {"type": "string"}),
]
ERRORS = ("400", "401", "403", "404", "405", "406", "409", "410", "412", "413", "415", "422", "429", "503")


def openapi_document(statement: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document of what `statement` (our CapabilityStatement) declares."""
    rest = statement["rest"][0]
    paths: dict[str, dict[str, Any]] = {"/metadata": {"get": _operation("capabilities", "The CapabilityStatement", {"200": _fhir("Resource")})}}
    system = {i["code"] for i in rest.get("interaction", [])}
    if system & {"transaction", "batch"}:
        paths["/"] = {"post": _operation("transaction-batch", "A transaction or batch Bundle",
                                         {"200": _fhir("Bundle")}, body=_fhir_body("TransactionOrBatch"))}
    if "history-system" in system:
        paths["/_history"] = {"get": _operation("history-system", "Every change", {"200": _fhir("Bundle")})}
    for resource in rest["resource"]:
        _add_type(paths, resource)
    if any(o["name"] == "export" for o in rest.get("operation", [])):
        _add_export(paths, [r["type"] for r in rest["resource"] if any(o["name"] == "export" for o in r.get("operation", []))])
    return {
        "openapi": "3.1.0",
        "info": {"title": "calipso FHIR R4 API", "version": statement["software"]["version"],
                 "description": "Generated from the CapabilityStatement at [base]/metadata. Bodies are FHIR R4 JSON."},
        "servers": [{"url": statement["implementation"]["url"]}],
        "paths": paths,
        "components": {"schemas": _schemas(sorted(r["type"] for r in rest["resource"])),
                       "responses": {"Error": _fhir("OperationOutcome", "An error, described by an OperationOutcome")}},
    }


def _add_type(paths: dict[str, dict[str, Any]], resource: dict[str, Any]) -> None:
    kind = resource["type"]
    codes = {i["code"] for i in resource.get("interaction", [])}
    type_path, instance_path = f"/{kind}", f"/{kind}/{{id}}"
    if "search-type" in codes:
        query = [_query(p["name"], SEARCH_TYPES.get(p.get("type", ""), {"type": "string"})) for p in resource.get("searchParam", [])]
        query += [_query(name, schema) for name, schema in RESULT_PARAMETERS]
        paths.setdefault(type_path, {})["get"] = _operation(f"search-{kind}", f"Search {kind}", {"200": _fhir("Bundle")}, query)
    if "create" in codes:
        paths.setdefault(type_path, {})["post"] = _operation(f"create-{kind}", f"Create a {kind}", {"201": _fhir(kind)},
                                                              body=_fhir_body(kind))
    if "history-type" in codes:
        paths[f"/{kind}/_history"] = {"get": _operation(f"history-{kind}", f"Changes to {kind}", {"200": _fhir("Bundle")})}
    if any(o["name"] == "validate" for o in resource.get("operation", [])):
        paths[f"/{kind}/$validate"] = {"post": _operation(f"validate-{kind}", f"Validate a {kind}", {"200": _fhir("OperationOutcome")},
                                                          body=_fhir_body(kind))}
    instance: dict[str, Any] = {}
    if "read" in codes:
        instance["get"] = _operation(f"read-{kind}", f"Read a {kind}", {"200": _fhir(kind)}, [_id()])
    if "update" in codes:
        instance["put"] = _operation(f"update-{kind}", f"Update (or create) a {kind}", {"200": _fhir(kind), "201": _fhir(kind)},
                                     [_id()], _fhir_body(kind))
    if "patch" in codes:
        patch = {"content": {JSON_PATCH: {"schema": {"type": "array", "items": {"type": "object"}}}}}
        instance["patch"] = _operation(f"patch-{kind}", f"Patch a {kind}", {"200": _fhir(kind)}, [_id()], patch)
    if "delete" in codes:
        instance["delete"] = _operation(f"delete-{kind}", f"Delete a {kind}", {"200": _fhir("OperationOutcome"), "204": {"description": "Deleted"}},
                                        [_id()])
    if instance:
        paths[instance_path] = instance
    if "history-instance" in codes:
        paths[f"{instance_path}/_history"] = {"get": _operation(f"history-instance-{kind}", f"Versions of a {kind}",
                                                                {"200": _fhir("Bundle")}, [_id()])}
    if "vread" in codes:
        version = {"name": "vid", "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}
        paths[f"{instance_path}/_history/{{vid}}"] = {"get": _operation(f"vread-{kind}", f"One version of a {kind}",
                                                                         {"200": _fhir(kind)}, [_id(), version])}


def _add_export(paths: dict[str, dict[str, Any]], levels: list[str]) -> None:
    """Bulk Data `$export` (docs/bulk-export.md): kick-off at system level and for the types that
    declare it, the status URL and the files."""
    prefer = {"name": "Prefer", "in": "header", "required": True,
              "schema": {"type": "string", "enum": ["respond-async", "respond-async, handling=lenient"]}}
    query = [_query(name, {"type": "string"}) for name in ("_type", "_since", "_until", "_typeFilter", "_elements", "_outputFormat")]
    accepted = {"202": _fhir("OperationOutcome", "Accepted: poll the Content-Location URL")}
    parameters = {"content": {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/Parameters"}}}}
    for kind in ["", *levels]:
        path, extra = (f"/{kind}/{{id}}/$export", [_id()]) if kind == "Group" else (f"/{kind}/$export" if kind else "/$export", [])
        name = kind or "system"
        paths[path.replace("//", "/")] = {
            "get": _operation(f"export-{name}", f"Bulk export ({name} level)", accepted, [*extra, prefer, *query]),
            "post": _operation(f"export-{name}-post", f"Bulk export ({name} level), Parameters in the body", accepted,
                               [*extra, prefer], parameters),
        }
    job = {"name": "job", "in": "path", "required": True, "schema": {"type": "string"}}
    manifest = {"description": "The manifest", "content": {"application/json": {"schema": {"type": "object"}}}}
    paths["/$export-status/{job}"] = {
        "get": _operation("export-status", "An export's progress (202), then its manifest", {"200": manifest, "202": {"description": "Running"}},
                          [job]),
        "delete": _operation("export-cancel", "Cancel an export, or remove its files", accepted, [job]),
    }
    file_name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    ndjson = {"description": "NDJSON", "content": {"application/fhir+ndjson": {"schema": {"type": "string"}}}}
    paths["/$export-file/{job}/{name}"] = {"get": _operation("export-file", "One file of an export", {"200": ndjson}, [job, file_name])}


def _operation(operation_id: str, summary: str, answers: dict[str, Any], parameters: list[dict[str, Any]] | None = None,
               body: dict[str, Any] | None = None) -> dict[str, Any]:
    responses = dict(answers)
    for status in ERRORS:
        responses.setdefault(status, {"$ref": "#/components/responses/Error"})
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, **body}
    return operation


def _id() -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _fhir(kind: str, description: str = "FHIR R4 JSON") -> dict[str, Any]:
    return {"description": description, "content": {FHIR_JSON: {"schema": {"$ref": f"#/components/schemas/{kind}"}}}}


def _fhir_body(kind: str) -> dict[str, Any]:
    return {"content": {FHIR_JSON: {"schema": {"$ref": f"#/components/schemas/{kind}"}}}}


def _schemas(types: list[str]) -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Resource": {"type": "object", "required": ["resourceType"], "properties": {"resourceType": {"type": "string"}}},
        "OperationOutcome": {"type": "object", "required": ["resourceType", "issue"],
                             "properties": {"resourceType": {"const": "OperationOutcome"},
                                            "issue": {"type": "array", "minItems": 1, "items": {"type": "object"}}}},
    }
    for kind in types:
        if kind == "OperationOutcome":
            continue
        schemas[kind] = {"type": "object", "required": ["resourceType"],
                         "properties": {"resourceType": {"const": kind}, **COMMON_ELEMENTS},
                         "description": f"A FHIR R4 {kind}: http://hl7.org/fhir/R4/{kind.lower()}.html"}
    schemas["Bundle"]["properties"].update(BUNDLE_ELEMENTS)
    schemas["Bundle"]["required"] = ["resourceType", "type"]
    schemas["TransactionOrBatch"] = {
        "type": "object", "required": ["resourceType", "type", "entry"],
        "properties": {"resourceType": {"const": "Bundle"}, "type": {"enum": ["transaction", "batch"]},
                       "entry": {"type": "array", "minItems": 1, "items": {**BUNDLE_ENTRY, "required": ["request"]}}},
    }
    return schemas


# The elements every resource has, and a Bundle's, sketched (not their R4 rules): a client
# sees the shape, a fuzzer explores it.
COMMON_ELEMENTS: dict[str, Any] = {
    "id": {"type": "string"},
    "meta": {"type": "object", "properties": {"profile": {"type": "array", "items": {"type": "string"}}, "versionId": {"type": "string"}}},
    "text": {"type": "object", "properties": {"status": {"type": "string"}, "div": {"type": "string"}}},
    "extension": {"type": "array", "items": {"type": "object", "properties": {"url": {"type": "string"}, "valueString": {"type": "string"}}}},
}
BUNDLE_ELEMENTS: dict[str, Any] = {
    "type": {"type": "string", "enum": ["transaction", "batch", "collection", "document", "message", "searchset", "history"]},
}
BUNDLE_ENTRY: dict[str, Any] = {"type": "object", "properties": {
    "fullUrl": {"type": "string"},
    "resource": {"type": "object", "required": ["resourceType"],
                 "properties": {"resourceType": {"enum": ["Patient", "Communication", "CarePlan", "CareTeam", "Encounter", "Bundle", "Basic"]},
                                "id": {"type": "string"}}},
    "request": {"type": "object", "required": ["method", "url"], "properties": {
        "method": {"description": "GET, HEAD, POST, PUT, DELETE or PATCH"}, "url": {"type": "string"},
        "ifNoneExist": {"type": "string"}, "ifMatch": {"type": "string"}}},
}}
BUNDLE_ELEMENTS["entry"] = {"type": "array", "items": BUNDLE_ENTRY}


__all__ = ["openapi_document"]
