// The care circle (members, roles, how to reach them) and the home care plan's activities.
import { useEffect, useState } from 'preact/hooks';
import { html } from '../ui.js';
import { errorText, get } from '../fhir.js';
import { TELECOM, personName, referenceName, when } from '../format.js';
import { circleAndPlan, roleText } from '../notebook.js';
import { Heading } from './layout.js';

const ACTIVITY_STATUS = {
  'not-started': 'pas commencée', scheduled: 'prévue', 'in-progress': 'en cours', 'on-hold': 'suspendue',
  completed: 'terminée', cancelled: 'annulée', stopped: 'arrêtée', unknown: 'inconnu', 'entered-in-error': 'erreur de saisie',
};

export function Circle({ session, guide, patientId }) {
  const [state, setState] = useState(null);
  const [patient, setPatient] = useState(null);
  useEffect(() => {
    get(session.client, `Patient/${patientId}`).then(setPatient).catch(() => null);
    circleAndPlan(session.client, patientId).then(setState).catch(error => setState({ error: errorText(error) }));
  }, [patientId]);

  return html`
    <${Heading}>Cercle de soins de ${patient ? personName(patient) : '…'}<//>
    <nav aria-label="Rubriques du patient" class="actions">
      <a href=${`#/patient/${patientId}`}>Carnet</a>
      <a href=${`#/patient/${patientId}/cercle`} aria-current="page">Cercle de soins et plan de soins</a>
    </nav>
    ${state === null && html`<p role="status">Chargement…</p>`}
    ${state?.error && html`<p class="error" role="alert">${state.error}</p>`}
    ${state?.teams && state.teams.length === 0 && html`<p>Aucun cercle de soins actif.</p>`}
    ${state?.teams?.map(team => html`
      <section class="card" key=${team.id} aria-labelledby=${`equipe-${team.id}`}>
        <h2 id=${`equipe-${team.id}`}>${team.name ?? 'Cercle de soins'}</h2>
        ${team.period?.start && html`<p class="meta">Depuis le ${when(team.period.start)}</p>`}
        <table>
          <caption class="visually-hidden">Membres du cercle de soins</caption>
          <thead><tr><th scope="col">Nom</th><th scope="col">Rôle</th><th scope="col">Contact</th></tr></thead>
          <tbody>
            ${(team.participant ?? []).map((p, i) => html`
              <tr key=${i}>
                <td>${referenceName(p.member, state.known)}</td>
                <td>${roleText(p, guide) || '—'}</td>
                <td>${contact(state.known.get(p.member?.reference))}</td>
              </tr>`)}
          </tbody>
        </table>
      </section>`)}
    <h2>Plan de soins à domicile</h2>
    ${state?.plans && state.plans.length === 0 && html`<p>Aucun plan de soins actif.</p>`}
    ${state?.plans?.map(plan => html`
      <section class="card" key=${plan.id} aria-label=${plan.title ?? 'Plan de soins'}>
        <h3>${plan.title ?? 'Plan de soins'}</h3>
        ${plan.period?.start && html`<p class="meta">Depuis le ${when(plan.period.start)}</p>`}
        <ul>
          ${(plan.activity ?? []).map((a, i) => html`
            <li key=${i}>${a.detail?.description ?? a.detail?.code?.text ?? 'Activité'}
              ${a.detail?.status && html` <span class="meta">(${ACTIVITY_STATUS[a.detail.status] ?? a.detail.status})</span>`}</li>`)}
        </ul>
      </section>`)}`;
}

function contact(resource) {
  const telecom = (resource?.telecom ?? []).filter(t => t.value);
  if (!telecom.length) return '—';
  return telecom.map(t => `${TELECOM[t.system] ?? t.system ?? ''} ${t.value}`.trim()).join(', ');
}
