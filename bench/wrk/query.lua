-- GET PATH_TEMPLATE with %d replaced by a random number below N: wrk -s query.lua URL -- TEMPLATE N
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

local template, limit = "", 1

function init(args)
  template, limit = args[1], tonumber(args[2])
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function request()
  return wrk.format("GET", string.format(template, math.random(0, limit - 1)))
end
