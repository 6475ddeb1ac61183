"""Bulk Data Access (IG 2.0) `$export`: kick-off requests read into export jobs, jobs run in the
background into NDJSON files, and the manifest that lists them (docs/bulk-export.md)."""
