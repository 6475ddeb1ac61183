-- POST the body file given after `--` to the URL's path: wrk -s create.lua URL -- BODY_FILE
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

function init(args)
  local file = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = file:read("*a")
  wrk.headers["Content-Type"] = "application/fhir+json"
  file:close()
end
