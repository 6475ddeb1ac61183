// fhir-kit-client against a calipso base URL, as its users write it:
//   node fhir_kit_client.mjs BASE BODIES.json
// BODIES.json holds {transaction, batch}. Prints what happened as JSON on stdout.
import { readFileSync } from "node:fs";
import { Client } from "fhir-kit-client";

const [base, bodiesFile] = process.argv.slice(2);
const bodies = JSON.parse(readFileSync(bodiesFile, "utf8"));
const client = new Client({ baseUrl: base });
const statuses = (bundle) => bundle.entry.map((e) => e.response.status.slice(0, 3));

const transaction = await client.transaction({ body: bodies.transaction });
const batch = await client.batch({ body: bodies.batch });
for (let n = 0; n < 5; n++) {
  await client.create({ resourceType: "Patient", body: { resourceType: "Patient", name: [{ family: "Paged-Kit", given: [String(n)] }] } });
}
const paged = [];
let page = await client.search({ resourceType: "Patient", searchParams: { family: "Paged-Kit", _count: 2 } });
while (page) {
  for (const entry of page.entry ?? []) paged.push(entry.resource.name[0].given[0]);
  page = await client.nextPage({ bundle: page });
}
const counted = await client.search({ resourceType: "Patient", searchParams: { family: "Paged-Kit", _summary: "count" } });
console.log(JSON.stringify({ transaction: statuses(transaction), batch: statuses(batch), paged: paged.sort(), count: counted.total }));
