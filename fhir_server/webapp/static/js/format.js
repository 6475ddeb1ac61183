// How things read in French: dates in Paris time, people's names, references.

const DATE_TIME = new Intl.DateTimeFormat('fr-FR', {
  timeZone: 'Europe/Paris', weekday: 'short', day: 'numeric', month: 'long', year: 'numeric', hour: '2-digit', minute: '2-digit',
});
const DATE = new Intl.DateTimeFormat('fr-FR', { timeZone: 'Europe/Paris', day: 'numeric', month: 'long', year: 'numeric' });

/** "lun. 23 novembre 2026 à 09:30" for an instant, "23 novembre 2026" for a date. */
export function when(text) {
  if (!text) return '';
  const instant = new Date(text);
  if (Number.isNaN(instant.getTime())) return text;
  return text.length <= 10 ? DATE.format(instant) : DATE_TIME.format(instant);
}

/** A HumanName list as "Dr Claire PETIT". */
export function personName(resource) {
  for (const name of resource?.name ?? []) {
    if (name.text) return name.text;
    const parts = [...(name.prefix ?? []), ...(name.given ?? []), (name.family ?? '').toUpperCase()].filter(Boolean);
    if (parts.length) return parts.join(' ');
  }
  return '';
}

/** The words for a reference: the resource's name when we have it, else the reference's display. */
export function referenceName(reference, known) {
  if (!reference) return 'Inconnu';
  const resource = known.get(reference.reference);
  return personName(resource) || reference.display || 'Personne non affichée';
}

/** The text of a CodeableConcept list (first text or display). */
export function conceptText(concepts) {
  for (const concept of concepts ?? []) {
    if (concept.text) return concept.text;
    const coded = (concept.coding ?? []).find(c => c.display || c.code);
    if (coded) return coded.display || coded.code;
  }
  return '';
}

export const TELECOM = { phone: 'Téléphone', email: 'Courriel', fax: 'Fax', sms: 'SMS', url: 'Site' };
