"""The notebook web app end to end in Debian's chromium, driven by Playwright (no browser
download), against a real `calipso serve` holding the demo (tests/webapp_fixtures.py).

Where chromium is missing these tests are skipped with the reason, except when
CALIPSO_REQUIRE_BROWSER=1 (CI: `.ci/run` installs chromium and sets it): then they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from typing import Any, Iterator

import pytest

from fhir_server.webapp.vendor import install
from tests.webapp_fixtures import DemoServer

pytest.importorskip("playwright", reason="playwright (the test extra) drives the browser")
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-gpu", "--disable-quic"]
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
PATIENT = "Suzanne Odette LEFEBVRE"
ACK = "https://fhir.hopitauxchampagnesud.fr/calipso/CodeSystem/entry-kind|ack"


def chromium() -> str:
    found = os.environ.get("CALIPSO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "Debian's chromium is not installed (apt-get install chromium): the browser tests need it"
    if os.environ.get("CALIPSO_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def errors() -> list[str]:
    return []


def new_page(browser: Browser, errors: list[str], **options: Any) -> Page:
    context = browser.new_context(locale="fr-FR", timezone_id="Europe/Paris", **options)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page


def sign_in(page: Page, demo: DemoServer, who: str) -> None:
    """The SMART standalone launch: the app → the dev sign-in page → back, signed in."""
    page.goto(f"http://127.0.0.1:{demo.served.port}/app/")
    page.get_by_role("button", name="Se connecter").click()
    page.wait_for_url("**/dev-auth/authorize**")
    page.get_by_role("button", name=re.compile(who)).click()
    expect(page.get_by_role("button", name="Se déconnecter")).to_be_visible()


def open_notebook(page: Page) -> None:
    page.get_by_role("link", name=PATIENT).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Carnet de {PATIENT}")
    expect(page.locator("article.entry").first).to_be_visible()


def entry(page: Page, text: str) -> Any:
    """The entry whose own text (not a reply's) holds `text`."""
    return page.locator("article.entry", has=page.locator(":scope > p.text", has_text=text))


def own(article: Any, selector: str) -> Any:
    """Something of this entry itself, not of its replies."""
    return article.locator(f":scope > {selector}")


def write_entry(page: Page, kind: str, text: str, urgent: bool = False) -> None:
    page.get_by_role("button", name="Nouvelle entrée").click()
    form = page.get_by_role("form", name="Nouvelle entrée")
    form.get_by_label("Type d'entrée").select_option(label=kind)
    form.get_by_label("Texte").fill(text)
    if urgent:
        form.get_by_label("Urgent").check()
    form.get_by_role("button", name="Ajouter au carnet").dblclick()  # a double click makes one entry
    expect(entry(page, text)).to_have_count(1)


def entries_with(demo: DemoServer, text: str) -> list[dict[str, Any]]:
    patient = demo.reference("patient")
    found = demo.matches(f"Communication?subject={patient}&category:not={ACK}&_count=200")
    return [e for e in found if any(text == p.get("contentString") for p in e.get("payload", []))]


def receipts_of(demo: DemoServer, entry_id: str) -> list[dict[str, Any]]:
    return demo.matches(f"Communication?in-response-to=Communication/{entry_id}&category={ACK}")


def test_a_nurse_writes_the_gp_reads_and_the_nurse_sees_it_read(browser: Browser, demo_server: DemoServer, errors: list[str]) -> None:
    text = f"Pansement refait, plaie propre. Prochain passage jeudi ({uuid.uuid4().hex[:6]})."
    nurse = new_page(browser, errors)
    sign_in(nurse, demo_server, "Claire PETIT")
    expect(nurse.get_by_role("heading", level=1)).to_have_text("Mes patients")
    open_notebook(nurse)
    write_entry(nurse, "Transmission", text, urgent=True)
    written = entries_with(demo_server, text)
    assert len(written) == 1  # one entry, whatever the clicks
    assert written[0]["sender"]["reference"] == demo_server.reference("nurse") and written[0]["priority"] == "urgent"
    expect(entry(nurse, text).locator(".badge.urgent")).to_have_text("Urgent")
    nurse.context.close()

    gp = new_page(browser, errors)
    sign_in(gp, demo_server, "Hélène MOREAU")
    row = gp.locator("li.patient", has_text=PATIENT)
    expect(row.locator(".badge.unread")).to_contain_text("non lue")
    open_notebook(gp)
    mine = entry(gp, text)
    expect(mine.locator(".badge.unread")).to_have_text("Non lu")
    own(mine, ".actions").get_by_role("button", name="Lu", exact=True).dblclick()
    expect(mine.locator(".receipts")).to_contain_text("Lu par Dr Hélène MOREAU")
    expect(mine.locator(".badge.unread")).to_have_count(0)
    assert len(receipts_of(demo_server, written[0]["id"])) == 1  # one receipt per (entry, reader)
    gp.context.close()

    nurse = new_page(browser, errors)
    sign_in(nurse, demo_server, "Claire PETIT")
    open_notebook(nurse)
    expect(entry(nurse, text).locator(".receipts")).to_contain_text("Lu par Dr Hélène MOREAU")
    nurse.context.close()
    assert errors == []


def test_a_reply_sent_again_after_a_network_error_makes_one_reply(browser: Browser, demo_server: DemoServer, errors: list[str]) -> None:
    """The first POST reaches the server and commits, but its answer is lost: the app retries
    with the same client identifier and If-None-Exist, and the server finds the first one."""
    text = f"Vu, je passe demain matin ({uuid.uuid4().hex[:6]})."
    page = new_page(browser, errors)
    lost: list[str] = []

    def lose_first_answer(route: Route) -> None:
        if route.request.method == "POST" and not lost:
            lost.append(route.fetch().status_text)  # the server gets it and answers...
            route.abort("connectionreset")  # ...and the browser never sees the answer
        else:
            route.continue_()

    sign_in(page, demo_server, "Antoine ROUX")
    open_notebook(page)
    page.route("**/fhir/Communication", lose_first_answer)
    question = entry(page, "Faut-il s'inquiéter")
    own(question, ".actions").get_by_role("button", name="Répondre").click()
    form = own(question, "form")
    form.get_by_label("Votre réponse").fill(text)
    form.get_by_role("button", name="Envoyer la réponse").click()
    expect(own(question, ".replies").get_by_text(text)).to_be_visible()
    assert lost, "the first answer was not intercepted"
    replies = entries_with(demo_server, text)
    assert len(replies) == 1 and replies[0]["inResponseTo"][0]["reference"].startswith("Communication/")
    page.context.close()
    assert errors == []


def test_the_care_circle_and_plan(browser: Browser, demo_server: DemoServer, errors: list[str]) -> None:
    page = new_page(browser, errors)
    sign_in(page, demo_server, "Sophie GIRARD")
    open_notebook(page)
    page.get_by_role("link", name="Cercle de soins et plan de soins").click()
    members = page.get_by_role("table")
    expect(members.get_by_role("row", name=re.compile("Claire PETIT"))).to_contain_text("Infirmier(e) libéral(e)")
    expect(members.get_by_role("row", name=re.compile("Hélène MOREAU"))).to_contain_text("Médecin traitant")
    expect(members.get_by_role("row", name=re.compile("Isabelle LEFEBVRE"))).to_contain_text("Aidant")
    expect(page.get_by_text("Régime sans sel", exact=False)).to_be_visible()  # the plan's activities (from NTE)
    page.context.close()
    assert errors == []


def test_the_patient_sees_her_notebook_without_what_is_hidden_from_her(browser: Browser, demo_server: DemoServer,
                                                                       errors: list[str]) -> None:
    page = new_page(browser, errors)
    sign_in(page, demo_server, PATIENT)
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Carnet de {PATIENT}")  # straight to her notebook
    expect(page.get_by_text("Sortie le", exact=False)).to_be_visible()
    expect(page.get_by_text("Furosémide augmenté", exact=False)).to_be_visible()
    expect(page.get_by_text("Pronostic", exact=False)).to_have_count(0)  # INVISIBLE_PATIENT
    expect(page.get_by_role("link", name="Mes patients")).to_have_count(0)
    page.context.close()

    daughter = new_page(browser, errors)
    sign_in(daughter, demo_server, "Isabelle LEFEBVRE")
    expect(daughter.get_by_role("heading", level=1)).to_have_text(f"Carnet de {PATIENT}")
    expect(daughter.get_by_text("Pronostic", exact=False)).to_be_visible()  # hidden from the patient only
    daughter.context.close()
    assert errors == []


def test_a_new_entry_appears_without_reload(browser: Browser, demo_server: DemoServer, errors: list[str]) -> None:
    page = new_page(browser, errors)
    sign_in(page, demo_server, "Claire PETIT")
    open_notebook(page)
    # the app polls the first page with its ETag: nothing changed, so 304 and no body
    unchanged = page.wait_for_event("response", lambda r: "/fhir/Communication?" in r.url and r.status == 304, timeout=30_000)
    assert unchanged.request.headers.get("if-none-match", "").startswith('W/"')
    text = f"Kinésithérapie décalée à 11 h ({uuid.uuid4().hex[:6]})."
    physio = demo_server.reference("physio")
    token = demo_server.served.token("--sub", "physio", "--scope", "user/*.cruds", "--fhir-user", physio)
    import httpx

    entry_kind = {"system": "https://fhir.hopitauxchampagnesud.fr/calipso/CodeSystem/entry-kind", "code": "appointment"}
    created = httpx.post(f"{demo_server.served.base}/Communication", headers={"Authorization": f"Bearer {token}"}, json={
        "resourceType": "Communication", "status": "completed", "category": [{"coding": [entry_kind]}],
        "subject": {"reference": demo_server.reference("patient")}, "sent": "2026-12-01T08:00:00Z",
        "sender": {"reference": physio}, "payload": [{"contentString": text}]}, timeout=30)
    assert created.status_code == 201, created.text
    expect(entry(page, text)).to_have_count(1, timeout=40_000)  # the app polls every 10 s
    page.context.close()
    assert errors == []


def axe_violations(page: Page, axe_source: str) -> list[str]:
    page.add_script_tag(content=axe_source)
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG)
    return [f"{v['id']}: {v['help']} ({', '.join(n['target'][0] for n in v['nodes'][:3])})" for v in result["violations"]]


def test_every_screen_passes_axe(browser: Browser, demo_server: DemoServer, errors: list[str]) -> None:
    """WCAG 2 A/AA by axe-core (the locked npm package) on each screen; the page's CSP is
    bypassed only so that axe itself can be injected."""
    axe_source = (install(("axe-core",)) / "axe-core" / "axe.min.js").read_text(encoding="utf-8")
    page = new_page(browser, errors, bypass_csp=True)
    found: dict[str, list[str]] = {}
    page.goto(f"http://127.0.0.1:{demo_server.served.port}/app/")
    expect(page.get_by_role("button", name="Se connecter")).to_be_visible()
    found["welcome"] = axe_violations(page, axe_source)
    page.get_by_role("button", name="Se connecter").click()
    page.wait_for_url("**/dev-auth/authorize**")
    found["dev sign-in"] = axe_violations(page, axe_source)
    page.get_by_role("button", name=re.compile("Claire PETIT")).click()
    expect(page.locator("li.patient").first).to_be_visible()
    found["my patients"] = axe_violations(page, axe_source)
    open_notebook(page)
    page.get_by_role("button", name="Nouvelle entrée").click()
    own(entry(page, "Faut-il s'inquiéter"), ".actions").get_by_role("button", name="Répondre").click()
    found["notebook"] = axe_violations(page, axe_source)
    page.get_by_role("link", name="Cercle de soins et plan de soins").click()
    expect(page.get_by_role("table")).to_be_visible()
    found["care circle"] = axe_violations(page, axe_source)
    page.context.close()
    assert {screen: v for screen, v in found.items() if v} == {}
    assert errors == []


def tab_to(page: Page, name: str, presses: int = 80) -> None:
    """Press Tab until the focused element's text or label is `name` (fails if it never is)."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        focused = page.evaluate("() => { const e = document.activeElement;"
                                " return (e.getAttribute('aria-label') || e.labels?.[0]?.textContent || e.textContent || '').trim(); }")
        if focused == name:
            return
    raise AssertionError(f"{name!r} is not reachable with the Tab key")


def test_the_notebook_works_with_the_keyboard_alone(browser: Browser, demo_server: DemoServer, errors: list[str]) -> None:
    text = f"Écrit au clavier seul ({uuid.uuid4().hex[:6]})."
    page = new_page(browser, errors)
    page.goto(f"http://127.0.0.1:{demo_server.served.port}/app/")
    tab_to(page, "Se connecter")
    page.keyboard.press("Enter")
    page.wait_for_url("**/dev-auth/authorize**")
    tab_to(page, "Claire PETIT Infirmier(e) libéral(e)")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Mes patients")
    tab_to(page, PATIENT)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Carnet de {PATIENT}")
    tab_to(page, "Nouvelle entrée")
    page.keyboard.press("Enter")
    tab_to(page, "Texte")
    page.keyboard.type(text)
    tab_to(page, "Ajouter au carnet")
    page.keyboard.press("Enter")
    expect(entry(page, text)).to_have_count(1)
    page.context.close()
    assert errors == []


def test_the_notebook_filters_by_kind_and_pages(browser: Browser, demo_server: DemoServer, errors: list[str]) -> None:
    token = demo_server.system_token()
    patient, physio = demo_server.reference("patient"), demo_server.reference("physio")
    observation = {"system": "https://fhir.hopitauxchampagnesud.fr/calipso/CodeSystem/entry-kind", "code": "observation"}
    import httpx

    for n in range(21):  # more than a page, whatever the other tests wrote
        created = httpx.post(f"{demo_server.served.base}/Communication", headers={"Authorization": f"Bearer {token}"}, json={
            "resourceType": "Communication", "status": "completed", "category": [{"coding": [observation]}],
            "subject": {"reference": patient}, "sent": f"2026-11-30T{n:02d}:10:00Z", "sender": {"reference": physio},
            "payload": [{"contentString": f"Marche dans le couloir, séance {n}."}]}, timeout=30)
        assert created.status_code == 201, created.text
    page = new_page(browser, errors)
    sign_in(page, demo_server, "Hélène MOREAU")
    open_notebook(page)
    top_kinds = page.locator("ol.entries > li > article > header > .badge.kind")
    page.get_by_label("Afficher").select_option(label="Alerte")
    expect(top_kinds).to_have_text(["Alerte"])  # the demo's one alert, and nothing else
    page.get_by_label("Afficher").select_option(label="Toutes les entrées")
    older = page.get_by_role("button", name="Entrées plus anciennes")
    expect(older).to_be_visible()
    assert page.locator("ol.entries > li").count() <= 20  # one page at a time
    expect(page.locator("article.discharge")).to_have_count(0)  # the oldest entry is not on the first page
    while older.count():
        older.click()
        page.wait_for_load_state("networkidle")
    expect(page.locator("article.discharge")).to_have_count(1)  # the hospital's discharge entry stands out
    expect(page.locator("article.discharge .badge.kind")).to_have_text("Informations de sortie")
    page.context.close()
    assert errors == []


def test_a_practitioner_finds_the_patients_of_its_roles_teams(browser: Browser, demo_server: DemoServer, errors: list[str]) -> None:
    """A care team may list a professional's situation (PractitionerRole) rather than the
    person: the access policy reaches those patients, and so does *Mes patients*."""
    import httpx

    headers = {"Authorization": f"Bearer {demo_server.system_token()}"}
    pharmacist = demo_server.reference("pharmacist")
    suffix = uuid.uuid4().hex[:6]

    def create(resource: dict[str, Any]) -> str:
        created = httpx.post(f"{demo_server.served.base}/{resource['resourceType']}", json=resource, headers=headers, timeout=30)
        assert created.status_code == 201, created.text
        return f"{resource['resourceType']}/{created.json()['id']}"

    role = create({"resourceType": "PractitionerRole", "active": True, "practitioner": {"reference": pharmacist}})
    patient = create({"resourceType": "Patient", "name": [{"family": f"GARNIER{suffix.upper()}", "given": ["Paul"]}]})
    create({"resourceType": "CareTeam", "status": "active", "name": "Cercle de soins de Paul GARNIER", "subject": {"reference": patient},
            "participant": [{"member": {"reference": role}}]})
    page = new_page(browser, errors)
    sign_in(page, demo_server, "Sophie GIRARD")
    expect(page.get_by_role("link", name=f"Paul GARNIER{suffix.upper()}")).to_be_visible()
    expect(page.get_by_role("link", name=PATIENT)).to_be_visible()  # and her own team's patient still
    page.context.close()
    assert errors == []
