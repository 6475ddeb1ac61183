// Signing in: a SMART standalone launch (authorization code + PKCE) with the fhirclient library,
// against the authorization server the FHIR server's .well-known/smart-configuration names.
import { get } from './fhir.js';
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
  const user = await get(client, me).catch(() => null);
  let patientId = null;
  if (kind === 'Patient') patientId = client.patient.id || me.split('/')[1];
  if (kind === 'RelatedPerson') patientId = (user?.patient?.reference ?? '').split('/')[1] || null;
  return { client, me, kind, name: personName(user) || me, patientId, professional: kind.startsWith('Practitioner') };
}
