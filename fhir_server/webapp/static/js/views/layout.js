// The frame of every screen: banner, navigation, the page's heading (focused on arrival).
import { useEffect, useRef } from 'preact/hooks';
import { html } from '../ui.js';
import { signOut } from '../session.js';

export function Banner({ session }) {
  return html`
    <header class="banner">
      <p class="brand">Carnet de liaison</p>
      ${session && html`
        <nav aria-label="Navigation principale">
          <ul>
            ${session.professional && html`<li><a href="#/">Mes patients</a></li>`}
            ${!session.professional && session.patientId && html`<li><a href=${`#/patient/${session.patientId}`}>Le carnet</a></li>`}
            <li><span class="visually-hidden">Connecté(e) : </span><span class="user">${session.name}</span></li>
            <li><button type="button" class="link" onClick=${signOut}>Se déconnecter</button></li>
          </ul>
        </nav>`}
    </header>`;
}

/** The screen's h1, focused when the screen opens (screen readers announce where we are). */
export function Heading({ children }) {
  const ref = useRef(null);
  useEffect(() => { ref.current?.focus(); }, []);
  return html`<h1 tabindex="-1" ref=${ref}>${children}</h1>`;
}
