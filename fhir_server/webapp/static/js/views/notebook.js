// One patient's notebook: entries newest first, replies threaded, read receipts, "Lu".
// New entries appear without reloading: every POLL_SECONDS the first page is asked for again
// with the ETag of the one shown (If-None-Match); a 304 costs nothing, a new page replaces it.
import { useEffect, useRef, useState } from 'preact/hooks';
import { html } from '../ui.js';
import { errorText, get } from '../fhir.js';
import { personName, referenceName, when } from '../format.js';
import { acknowledge, kindOf, memberRoles, notebookPage } from '../notebook.js';
import { EntryForm } from './entry-form.js';
import { Heading } from './layout.js';

const POLL_SECONDS = 10;
const DISCHARGE = 'discharge-info';

export function Notebook({ session, guide, patientId }) {
  const [patient, setPatient] = useState(null);
  const [roles, setRoles] = useState(new Map());
  const [kind, setKind] = useState('');
  const [pages, setPages] = useState(null);
  const [error, setError] = useState(null);
  const [writing, setWriting] = useState(false);
  const [news, setNews] = useState('');
  const shown = useRef(null); // the ETag of the first page on screen

  async function load(announce = '', etag = null) {
    try {
      const page = await notebookPage(session.client, patientId, guide, { kind, etag });
      if (page === null) return; // unchanged
      shown.current = page.etag;
      setPages([page]);
      setError(null);
      setNews(announce);
    } catch (failure) {
      setError(errorText(failure));
    }
  }

  async function more() {
    const last = pages[pages.length - 1];
    try {
      const page = await notebookPage(session.client, patientId, guide, { url: last.next });
      setPages([...pages, page]);
    } catch (failure) {
      setError(errorText(failure));
    }
  }

  useEffect(() => {
    get(session.client, `Patient/${patientId}`).then(setPatient).catch(failure => setError(errorText(failure)));
    memberRoles(session.client, patientId, guide).then(setRoles).catch(() => setRoles(new Map()));
  }, [patientId]);

  useEffect(() => { setPages(null); load(); }, [patientId, kind]);

  useEffect(() => {
    const timer = setInterval(async () => {
      if (document.hidden) return;
      try {
        await load('Le carnet a été mis à jour.', shown.current);
      } catch { /* the next poll tries again */ }
    }, POLL_SECONDS * 1000);
    return () => clearInterval(timer);
  }, [patientId, kind]);

  const known = new Map(pages?.flatMap(p => [...p.known]) ?? []);
  const threads = pages?.flatMap(p => p.threads) ?? [];
  const context = { session, guide, known, roles, patientId, reload: () => load() };
  const kinds = guide.kinds.filter(k => !k.receipt);

  return html`
    <${Heading}>Carnet de ${patient ? personName(patient) || 'ce patient' : '…'}<//>
    <nav aria-label="Rubriques du patient" class="actions">
      <a href=${`#/patient/${patientId}`} aria-current="page">Carnet</a>
      <a href=${`#/patient/${patientId}/cercle`}>Cercle de soins et plan de soins</a>
    </nav>
    <p class="visually-hidden" aria-live="polite">${news}</p>
    ${news && html`<p class="notice">${news}</p>`}
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <div class="filters">
      <div>
        <label for="filtre-type">Afficher</label><br/>
        <select id="filtre-type" value=${kind} onChange=${e => setKind(e.target.value)}>
          <option value="">Toutes les entrées</option>
          ${kinds.map(k => html`<option value=${k.code} key=${k.code}>${k.display}</option>`)}
        </select>
      </div>
      ${!writing && html`<button type="button" class="primary" onClick=${() => setWriting(true)}>Nouvelle entrée</button>`}
    </div>
    ${writing && html`<${EntryForm} session=${session} guide=${guide} patientId=${patientId}
        onWritten=${() => { setWriting(false); load('Entrée ajoutée au carnet.'); }} onCancel=${() => setWriting(false)}/>`}
    ${pages === null && !error && html`<p role="status">Chargement…</p>`}
    ${pages && threads.length === 0 && html`<p>Aucune entrée pour l'instant.</p>`}
    <ol class="entries" aria-label="Entrées du carnet, les plus récentes d'abord">
      ${threads.map(node => html`<${Entry} key=${node.entry.id} node=${node} context=${context}/>`)}
    </ol>
    ${pages && pages[pages.length - 1].next && html`<button type="button" onClick=${more}>Entrées plus anciennes</button>`}`;
}

function Entry({ node, context }) {
  const { entry, receipts, replies } = node;
  const { session, guide, known, roles } = context;
  const [replying, setReplying] = useState(false);
  const [acking, setAcking] = useState(false);
  const [error, setError] = useState(null);
  const kind = kindOf(entry, guide);
  const author = entry.sender?.reference;
  const mine = author === session.me;
  const readByMe = receipts.some(r => r.sender?.reference === session.me);
  const cancelled = entry.status === 'entered-in-error';
  const classes = ['entry', 'card', kind?.code === DISCHARGE ? 'discharge' : '', entry.priority === 'urgent' ? 'urgent' : '',
    cancelled ? 'cancelled' : ''].filter(Boolean).join(' ');
  const text = (entry.payload ?? []).map(p => p.contentString).filter(Boolean).join('\n');

  async function markRead() {
    setAcking(true);
    setError(null);
    try {
      await acknowledge(session.client, { entry, me: session.me, myName: session.name, guide });
      context.reload();
    } catch (failure) {
      setError(errorText(failure));
    } finally {
      setAcking(false);
    }
  }

  return html`
    <li>
      <article class=${classes} aria-label=${`${kind?.display ?? 'Entrée'} du ${when(entry.sent)}`}>
        <header>
          <span class="badge kind">${kind?.display ?? 'Entrée'}</span>
          ${entry.priority === 'urgent' && html`<span class="badge urgent">Urgent</span>`}
          ${!mine && !readByMe && !cancelled && html`<span class="badge unread">Non lu</span>`}
          ${cancelled && html`<span class="badge">Annulée</span>`}
          <span class="author">${referenceName(entry.sender, known)}</span>
          ${roles.get(author) && html`<span class="meta">${roles.get(author)}</span>`}
          <time class="meta" datetime=${entry.sent}>${when(entry.sent)}</time>
        </header>
        <p class="text">${text}</p>
        ${receipts.length > 0 && html`
          <p class="receipts">Lu par ${receipts.map((r, i) => html`${i ? ', ' : ''}${referenceName(r.sender, known)} (${when(r.sent)})`)}</p>`}
        ${error && html`<p class="error" role="alert">${error}</p>`}
        <div class="actions">
          ${!mine && !readByMe && !cancelled && html`<button type="button" onClick=${markRead} disabled=${acking}>Lu</button>`}
          ${!replying && !cancelled && html`<button type="button" onClick=${() => setReplying(true)}>Répondre</button>`}
        </div>
        ${replying && html`<${EntryForm} session=${session} guide=${guide} patientId=${context.patientId}
            parent=${`Communication/${entry.id}`} onWritten=${() => { setReplying(false); context.reload(); }}
            onCancel=${() => setReplying(false)}/>`}
        ${replies.length > 0 && html`
          <ol class="replies" aria-label="Réponses">
            ${replies.map(reply => html`<${Entry} key=${reply.entry.id} node=${reply} context=${context}/>`)}
          </ol>`}
      </article>
    </li>`;
}
