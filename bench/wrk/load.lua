-- Load a notebook through the API, then stop: wrk -s load.lua URL -- COUNT PATIENTS PRACTITIONERS OFFSET
-- Request n (from OFFSET) writes entry n of a patient chosen by n; the first requests of a fresh
-- load create patients, care teams and care plans with PUT (client ids), then Communications.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

local count, patients, practitioners, offset, n, done_count = 0, 0, 0, 0, 0, 0

function init(args)
  count, patients, practitioners, offset = tonumber(args[1]), tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
  wrk.headers["Content-Type"] = "application/fhir+json"
end

local function patient(i)
  return string.format('{"resourceType":"Patient","id":"pat-%d","identifier":[{"system":"urn:oid:1.2.250.1.71.4.2.7","value":"IPP%07d"}],"name":[{"family":"Famille%d","given":["Prénom%d"]}],"gender":"female","birthDate":"1950-01-01"}', i, i, i, i)
end

local function team(i)
  local a, b = i % practitioners, (i * 7 + 3) % practitioners
  return string.format('{"resourceType":"CareTeam","id":"team-%d","status":"active","subject":{"reference":"Patient/pat-%d"},"participant":[{"member":{"reference":"Practitioner/prac-%d"}},{"member":{"reference":"Practitioner/prac-%d"}}]}', i, i, a, b)
end

local function plan(i)
  return string.format('{"resourceType":"CarePlan","id":"plan-%d","status":"active","intent":"plan","subject":{"reference":"Patient/pat-%d"},"careTeam":[{"reference":"CareTeam/team-%d"}]}', i, i, i)
end

local function entry(k)
  local p = k % patients
  local day, minute = 1 + (k % 28), k % 1440
  return string.format('{"resourceType":"Communication","status":"completed","category":[{"coding":[{"system":"https://calipso.example.org/fhir/CodeSystem/entry-kind","code":"transmission"}]}],"subject":{"reference":"Patient/pat-%d"},"sender":{"reference":"Practitioner/prac-%d"},"sent":"2026-10-%02dT%02d:%02d:00Z","payload":[{"contentString":"Passage infirmier %d : pansement refait, constantes normales."}]}', p, k % practitioners, day, math.floor(minute / 60), minute % 60, k)
end

function request()
  local k = offset + n
  n = n + 1
  if k < patients then return wrk.format("PUT", "/fhir/Patient/pat-" .. k, nil, patient(k)) end
  k = k - patients
  if k < patients then return wrk.format("PUT", "/fhir/CareTeam/team-" .. k, nil, team(k)) end
  k = k - patients
  if k < patients then return wrk.format("PUT", "/fhir/CarePlan/plan-" .. k, nil, plan(k)) end
  return wrk.format("POST", "/fhir/Communication", nil, entry(k - patients))
end

function response(status, headers, body)
  done_count = done_count + 1
  if done_count >= count then wrk.thread:stop() end
end
