// Writing in the notebook: a new entry or a reply. One click, one entry: the entry carries a
// client identifier made when the form opens, sent with If-None-Exist on every attempt.
import { useRef, useState } from 'preact/hooks';
import { html } from '../ui.js';
import { errorText } from '../fhir.js';
import { writeEntry } from '../notebook.js';

const WRITTEN_BY_HOSPITAL = 'discharge-info';

export function EntryForm({ session, guide, patientId, parent = null, onWritten, onCancel }) {
  const kinds = guide.kinds.filter(k => !k.receipt && k.code !== WRITTEN_BY_HOSPITAL);
  const [kind, setKind] = useState(parent ? 'transmission' : kinds[0].code);
  const [text, setText] = useState('');
  const [urgent, setUrgent] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const clientId = useRef(crypto.randomUUID());
  const prefix = parent ? `reponse-${parent.split('/')[1]}` : 'nouvelle';

  async function submit(event) {
    event.preventDefault();
    if (busy || !text.trim()) return;
    setBusy(true);
    setError(null);
    try {
      await writeEntry(session.client, {
        patientId, kind: guide.byCode.get(kind), text: text.trim(), urgent, parent, me: session.me, myName: session.name,
        clientId: clientId.current, guide,
      });
      clientId.current = crypto.randomUUID();
      setText('');
      setUrgent(false);
      onWritten?.();
    } catch (failure) {
      setError(errorText(failure));
    } finally {
      setBusy(false);
    }
  }

  return html`
    <form class="entry-form card" onSubmit=${submit} aria-label=${parent ? 'Répondre' : 'Nouvelle entrée'}>
      <div>
        <label for=${`${prefix}-kind`}>Type d'entrée</label><br/>
        <select id=${`${prefix}-kind`} value=${kind} onChange=${e => setKind(e.target.value)}>
          ${kinds.map(k => html`<option value=${k.code} key=${k.code}>${k.display}</option>`)}
        </select>
      </div>
      <div>
        <label for=${`${prefix}-text`}>${parent ? 'Votre réponse' : 'Texte'}</label>
        <textarea id=${`${prefix}-text`} required value=${text} onInput=${e => setText(e.target.value)}></textarea>
      </div>
      <div class="check">
        <input type="checkbox" id=${`${prefix}-urgent`} checked=${urgent} onChange=${e => setUrgent(e.target.checked)}/>
        <label for=${`${prefix}-urgent`}> Urgent</label>
      </div>
      ${error && html`<p class="error" role="alert">${error}</p>`}
      <div class="actions">
        <button type="submit" class="primary" disabled=${busy}>${busy ? 'Envoi…' : parent ? 'Envoyer la réponse' : 'Ajouter au carnet'}</button>
        ${onCancel && html`<button type="button" onClick=${onCancel}>Annuler</button>`}
      </div>
    </form>`;
}
