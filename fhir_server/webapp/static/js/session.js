// Signing in: a SMART standalone launch (authorization code + PKCE) with the fhirclient library,
// against the authorization server the FHIR server's .well-known/smart-configuration names.
import { get, unbundle } from './fhir.js';
import { personName } from './format.js';

const CLIENT_ID = 'calipso-carnet';
const SCOPE = 'openid fhirUser launch/patient user/*.cruds patient/*.cruds';
const fhirBase = () => `${location.origin}/fhir`;

export function signIn() {
  return FHIR.oauth2.authorize({
    iss: fhirBase(), clientId: CLIENT_ID, scope: SCOPE, redirectUri: `${location.origin}/app/`, pkceMode: 'required',
  });
}

export function signOut() {
  sessionStorage.clear();
  location.assign(`${location.origin}/app/`);
}

/** The signed-in session, or null when there is none yet (the sign-in screen shows). */
export async function resume() {
  const params = new URLSearchParams(location.search);
  if (!params.has('code') && !params.has('error') && !sessionStorage.getItem('SMART_KEY')) return null;
  const client = await FHIR.oauth2.ready();
  const me = client.getFhirUser();
  if (!me) throw new Error("Le jeton ne dit pas qui vous êtes (fhirUser) : l'application ne peut pas continuer.");
  const kind = me.split('/')[0];
  const user = await get(client, me).catch(() => null); // a caregiver's token reaches notebook types only
  let patientId = null, name = personName(user);
  if (kind === 'Patient') patientId = client.patient.id || me.split('/')[1];
  if (kind === 'RelatedPerson') ({ patientId, name } = await caredFor(client, me, name));
  return { client, me, kind, name: name || me, patientId, professional: kind.startsWith('Practitioner') };
}

/** The patient a caregiver helps, and the caregiver's name, from the care team it is part of. */
async function caredFor(client, me, name) {
  const bundle = await get(client, `CareTeam?participant=${encodeURIComponent(me)}&status=active&_count=1`);
  const team = unbundle(bundle).matches[0];
  const member = team?.participant?.find(p => p.member?.reference === me)?.member;
  return { patientId: (team?.subject?.reference ?? '').split('/')[1] || null, name: name || member?.display || '' };
}
