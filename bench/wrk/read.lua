-- GET PREFIX/<id> for ids read from a file, one per line: wrk -s read.lua URL -- IDS_FILE PREFIX
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

local ids, prefix, n = {}, "", 0

function init(args)
  for line in io.lines(args[1]) do ids[#ids + 1] = line end
  prefix = args[2]
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function request()
  n = n + 1
  return wrk.format("GET", prefix .. ids[math.random(#ids)])
end
