// "Mes patients": the patients whose active care team includes the signed-in professional.
import { useEffect, useState } from 'preact/hooks';
import { html } from '../ui.js';
import { errorText } from '../fhir.js';
import { personName, when } from '../format.js';
import { myPatients } from '../notebook.js';
import { Heading } from './layout.js';

export function PatientList({ session, guide }) {
  const [state, setState] = useState({ loading: true });
  useEffect(() => {
    myPatients(session.client, session.me, guide)
      .then(({ rows }) => setState({ rows }))
      .catch(error => setState({ error: errorText(error) }));
  }, [session.me]);

  return html`
    <${Heading}>Mes patients<//>
    ${state.loading && html`<p role="status">Chargement…</p>`}
    ${state.error && html`<p class="error" role="alert">${state.error}</p>`}
    ${state.rows && state.rows.length === 0 && html`<p>Vous ne faites partie d'aucun cercle de soins actif.</p>`}
    ${state.rows && html`
      <ul class="patients" aria-label="Patients suivis">
        ${state.rows.map(({ patient, unread, more, last }) => html`
          <li class="card patient" key=${patient.id}>
            <a href=${`#/patient/${patient.id}`}>${personName(patient) || 'Patient sans nom'}</a>
            ${unread > 0 && html` <span class="badge unread">${unread}${more ? '+' : ''} non lue${unread > 1 ? 's' : ''}</span>`}
            <p class="meta">
              ${patient.birthDate ? `Né(e) le ${when(patient.birthDate)} · ` : ''}
              ${last ? `Dernière entrée : ${when(last)}` : 'Aucune entrée'}
            </p>
          </li>`)}
      </ul>`}`;
}
