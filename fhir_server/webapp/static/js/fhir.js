// The FHIR calls the app makes, all through the public API with the signed-in user's token.

/** Resources of a Bundle by search mode, and a lookup of everything in it by "Type/id". */
export function unbundle(bundle) {
  const matches = [], included = [], known = new Map();
  for (const entry of bundle.entry ?? []) {
    const resource = entry.resource;
    if (!resource || resource.resourceType === 'OperationOutcome') continue;
    known.set(`${resource.resourceType}/${resource.id}`, resource);
    (entry.search?.mode === 'include' ? included : matches).push(resource);
  }
  const next = (bundle.link ?? []).find(l => l.relation === 'next')?.url ?? null;
  return { matches, included, known, next, total: bundle.total };
}

/** GET a search or a read (relative to the FHIR base, or a Bundle's absolute next link). */
export async function get(client, url) {
  return client.request({ url, headers: { 'Cache-Control': 'no-cache' } }, { flat: false, pageLimit: 1 });
}

/** GET a search with the ETag of the copy we have: null when the server says 304 (unchanged),
 * else { bundle, etag }. */
export async function getUnlessUnchanged(client, url, etag) {
  const headers = { 'Cache-Control': 'no-cache', ...(etag ? { 'If-None-Match': etag } : {}) };
  try {
    const { body, response } = await client.request({ url, headers, includeResponse: true }, { flat: false, pageLimit: 1 });
    return { bundle: body, etag: response.headers.get('ETag') };
  } catch (error) {
    if (error.status === 304) return null;
    throw error;
  }
}

/** Create, conditionally: a retry after a network error or a second click makes no second
 * resource (the server finds the first one by `criteria`). Retries a few times on network
 * errors only; an answer from the server (even an error) is final. */
export async function createOnce(client, resource, criteria, attempts = 3) {
  let lastError;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      return await client.request({
        url: resource.resourceType, method: 'POST', body: JSON.stringify(resource),
        headers: { 'Content-Type': 'application/fhir+json', 'If-None-Exist': criteria, Prefer: 'return=representation' },
      });
    } catch (error) {
      lastError = error;
      if (error.status) throw error; // the server answered: do not retry
      await new Promise(resolve => setTimeout(resolve, 500 * attempt));
    }
  }
  throw lastError;
}

/** The text of an error for the user (an OperationOutcome's diagnostics when there is one). */
export function errorText(error) {
  const issues = error?.body?.issue ?? error?.response?.body?.issue;
  const detail = issues?.map(i => i.diagnostics || i.details?.text).filter(Boolean).join(' ; ');
  if (error?.status === 401) return 'Votre session a expiré : reconnectez-vous.';
  if (error?.status === 403) return `Action refusée${detail ? ` : ${detail}` : '.'}`;
  return detail || error?.message || 'Erreur inconnue';
}
