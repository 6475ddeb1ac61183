// The notebook's reads and writes: entries, replies, read receipts, care circle and plan.
import { createOnce, get, getUnlessUnchanged, unbundle } from './fhir.js';

const PAGE_SIZE = 20;
const UNREAD_WINDOW = 100; // the latest entries looked at for the unread count

/** The guide's entry kinds and profiles (`/app/guide.json`, generated from profiles/). */
export async function loadGuide() {
  const response = await fetch('guide.json');
  if (!response.ok) throw new Error('guide.json indisponible');
  const guide = await response.json();
  const receipt = guide.kinds.find(k => k.receipt);
  return { ...guide, receipt, byCode: new Map(guide.kinds.map(k => [k.code, k])) };
}

const token = coding => `${coding.system}|${coding.code}`;

export function kindOf(resource, guide) {
  for (const concept of resource.category ?? []) {
    for (const coding of concept.coding ?? []) {
      const kind = guide.byCode.get(coding.code);
      if (kind && coding.system === kind.system) return kind;
    }
  }
  return null;
}

const isReceipt = (resource, guide) => kindOf(resource, guide)?.receipt === true;
const parentOf = resource => (resource.inResponseTo ?? [])[0]?.reference ?? null;

/** The patients of the active care teams the user takes part in (as itself, or, for a
 * practitioner, through one of its PractitionerRoles), each with its notebook's latest entry
 * date and the number of entries the user has neither written nor read. */
export async function myPatients(client, me, guide) {
  const who = encodeURIComponent(me);
  const queries = [`CareTeam?participant=${who}&status=active&_include=CareTeam:subject&_count=100`];
  if (me.startsWith('Practitioner/')) {
    queries.push(`CareTeam?participant:PractitionerRole.practitioner=${who}&status=active&_include=CareTeam:subject&_count=100`);
  }
  const pages = (await Promise.all(queries.map(query => get(client, query)))).map(unbundle);
  const known = new Map(pages.flatMap(page => [...page.known]));
  const patients = [...new Map(pages.flatMap(page => page.included)
    .filter(r => r.resourceType === 'Patient').map(r => [r.id, r])).values()];
  return Promise.all(patients.map(async patient => ({ patient, ...(await unreadSummary(client, patient.id, me, guide)) })))
    .then(rows => rows.concat().sort((a, b) => (b.last ?? '').localeCompare(a.last ?? '')))
    .then(rows => ({ rows, known }));
}

async function unreadSummary(client, patientId, me, guide) {
  const receipt = token(guide.receipt);
  const [entries, mine] = await Promise.all([
    get(client, `Communication?subject=Patient/${patientId}&category:not=${encodeURIComponent(receipt)}&status:not=entered-in-error`
      + `&_sort=-sent&_count=${UNREAD_WINDOW}&_elements=sender,sent,status`),
    get(client, `Communication?subject=Patient/${patientId}&category=${encodeURIComponent(receipt)}`
      + `&sender=${encodeURIComponent(me)}&_count=1000&_elements=inResponseTo`),
  ]);
  const read = new Set(unbundle(mine).matches.map(parentOf));
  const latest = unbundle(entries).matches;
  const unread = latest.filter(e => e.sender?.reference !== me && !read.has(`Communication/${e.id}`)).length;
  return { unread, more: unbundle(entries).next !== null && unread === latest.length, last: latest[0]?.sent ?? null };
}

/** One page of the notebook, newest first: entries with their replies threaded and their read
 * receipts, the people they name, the next page's URL and the page's ETag. With `etag` (the
 * first page we show), null when the server says nothing changed (304). */
export async function notebookPage(client, patientId, guide, { kind = '', url = null, etag = null } = {}) {
  const receipt = encodeURIComponent(token(guide.receipt));
  const filter = kind ? `&category=${encodeURIComponent(token(guide.byCode.get(kind)))}` : '';
  const first = `Communication?subject=Patient/${patientId}&category:not=${receipt}${filter}&_sort=-sent&_count=${PAGE_SIZE}`
    + '&_include=Communication:sender&_revinclude=Communication:in-response-to&_include:iterate=Communication:sender';
  const answer = await getUnlessUnchanged(client, url ?? first, etag);
  if (answer === null) return null;
  const page = unbundle(answer.bundle);
  return { ...page, etag: answer.etag, threads: thread(page, guide) };
}

function thread({ matches, included }, guide) {
  const communications = [...matches, ...included.filter(r => r.resourceType === 'Communication')];
  const present = new Set(matches.map(e => `Communication/${e.id}`));
  const receipts = new Map(), replies = new Map();
  for (const resource of communications) {
    const parent = parentOf(resource);
    if (!parent) continue;
    const into = isReceipt(resource, guide) ? receipts : replies;
    const list = into.get(parent) ?? [];
    if (!list.some(r => r.id === resource.id)) list.push(resource);
    into.set(parent, list);
  }
  const node = entry => ({
    entry,
    receipts: (receipts.get(`Communication/${entry.id}`) ?? []).sort((a, b) => a.sent.localeCompare(b.sent)),
    replies: (replies.get(`Communication/${entry.id}`) ?? []).sort((a, b) => a.sent.localeCompare(b.sent)).map(node),
  });
  return matches.filter(e => !present.has(parentOf(e))).map(node);
}

/** A new entry (or a reply), made exactly once per `clientId` however often it is sent. */
export function writeEntry(client, { patientId, kind, text, urgent, parent, me, myName, clientId, guide }) {
  const coding = [{ system: kind.system, code: kind.code, display: kind.display }];
  if (kind.noteType) coding.push({ system: kind.noteType.system, code: kind.noteType.code });
  const entry = {
    resourceType: 'Communication',
    meta: { profile: [guide.profiles.entry] },
    identifier: [{ system: 'urn:ietf:rfc:3986', value: `urn:uuid:${clientId}` }],
    status: 'completed',
    category: [{ coding }],
    priority: urgent ? 'urgent' : 'routine',
    subject: { reference: `Patient/${patientId}` },
    sent: new Date().toISOString(),
    sender: { reference: me, display: myName || undefined },
    payload: [{ contentString: text }],
  };
  if (parent) entry.inResponseTo = [{ reference: parent }];
  return createOnce(client, entry, `identifier=${encodeURIComponent(`urn:ietf:rfc:3986|urn:uuid:${clientId}`)}`);
}

/** "Lu": the user's read receipt for an entry, one per (entry, reader) whatever the clicks. */
export function acknowledge(client, { entry, me, myName, guide }) {
  const receipt = guide.receipt;
  const resource = {
    resourceType: 'Communication',
    meta: { profile: [guide.profiles.receipt] },
    status: 'completed',
    category: [{ coding: [{ system: receipt.system, code: receipt.code, display: receipt.display }] }],
    subject: entry.subject,
    sent: new Date().toISOString(),
    sender: { reference: me, display: myName || undefined },
    inResponseTo: [{ reference: `Communication/${entry.id}` }],
  };
  const criteria = `in-response-to=Communication/${entry.id}&sender=${encodeURIComponent(me)}`
    + `&category=${encodeURIComponent(token(receipt))}`;
  return createOnce(client, resource, criteria);
}

/** The patient's active care team (members with their resources when the token reaches them)
 * and active care plans. */
export async function circleAndPlan(client, patientId) {
  const [teams, plans] = await Promise.all([
    get(client, `CareTeam?subject=Patient/${patientId}&status=active&_include=CareTeam:participant&_count=10`),
    get(client, `CarePlan?subject=Patient/${patientId}&status=active&_count=10`),
  ]);
  const team = unbundle(teams);
  return { teams: team.matches, known: team.known, plans: unbundle(plans).matches };
}

/** Roles of the members of the patient's active care team, by reference ("Practitioner/x"). */
export async function memberRoles(client, patientId, guide) {
  const { matches } = unbundle(await get(client, `CareTeam?subject=Patient/${patientId}&status=active&_count=10`));
  const roles = new Map();
  for (const team of matches) {
    for (const participant of team.participant ?? []) {
      const reference = participant.member?.reference;
      const role = roleText(participant, guide);
      if (reference && role) roles.set(reference, role);
    }
  }
  return roles;
}

/** A care-team participant's role in French (the guide's name for our codes). */
export function roleText(participant, guide) {
  for (const role of participant.role ?? []) {
    if (role.text) return role.text;
    for (const coding of role.coding ?? []) {
      if (coding.system === guide.roles.system && guide.roles.display[coding.code]) return guide.roles.display[coding.code];
      if (coding.display) return coding.display;
    }
  }
  return '';
}
