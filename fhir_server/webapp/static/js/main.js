// The liaison notebook app: sign in, then route between the screens (hash routes).
import { useEffect, useState } from 'preact/hooks';
import { html, render } from './ui.js';
import { errorText } from './fhir.js';
import { loadGuide } from './notebook.js';
import { resume, signIn } from './session.js';
import { Banner, Heading } from './views/layout.js';
import { PatientList } from './views/patients.js';
import { Notebook } from './views/notebook.js';
import { Circle } from './views/circle.js';

function useRoute() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const changed = () => setHash(location.hash);
    addEventListener('hashchange', changed);
    return () => removeEventListener('hashchange', changed);
  }, []);
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean);
  return parts[0] === 'patient' && parts[1] ? { patientId: parts[1], circle: parts[2] === 'cercle' } : {};
}

function App() {
  const [state, setState] = useState({ loading: true });
  const route = useRoute();
  useEffect(() => {
    Promise.all([resume(), loadGuide()])
      .then(([session, guide]) => setState({ session, guide }))
      .catch(error => setState({ error: errorText(error) }));
  }, []);

  const { session, guide } = state;
  let screen;
  if (state.loading) screen = html`<p role="status">Chargement du carnet…</p>`;
  else if (state.error) screen = html`<${Heading}>Carnet de liaison<//><p class="error" role="alert">${state.error}</p>
    <button type="button" class="primary" onClick=${signIn}>Se reconnecter</button>`;
  else if (!session) screen = html`<${SignIn}/>`;
  else {
    const patientId = route.patientId ?? (session.professional ? null : session.patientId);
    if (patientId && route.circle) screen = html`<${Circle} key=${`c-${patientId}`} session=${session} guide=${guide} patientId=${patientId}/>`;
    else if (patientId) screen = html`<${Notebook} key=${`n-${patientId}`} session=${session} guide=${guide} patientId=${patientId}/>`;
    else if (session.professional) screen = html`<${PatientList} session=${session} guide=${guide}/>`;
    else screen = html`<${Heading}>Carnet de liaison<//><p>Aucun carnet n'est associé à votre compte.</p>`;
  }
  return html`<${Banner} session=${session}/><main id="contenu">${screen}</main>`;
}

function SignIn() {
  return html`
    <${Heading}>Carnet de liaison<//>
    <p>Le carnet partagé entre l'hôpital, le médecin traitant, les soignants à domicile, le patient et ses proches.</p>
    <button type="button" class="primary" onClick=${signIn}>Se connecter</button>`;
}

render(html`<${App}/>`, document.getElementById('app'));
