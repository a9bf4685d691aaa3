-- wrk script: cycle through the paths given after "--" (each may hold
-- one %d, filled with a number spread over the data set), so that every
-- view of the app is exercised with ids over the whole catalogue.
local paths = {}
local n = 0

init = function(args)
  for i, a in ipairs(args) do paths[i] = a end
  math.randomseed(tonumber(os.getenv("WRK_SEED") or "1") + os.time() % 97)
  n = math.random(1, 100000)
end

request = function()
  n = n + 1
  local p = paths[(n % #paths) + 1]
  if string.find(p, "%%d") then
    p = string.format(p, (n * 7919) % 1000003)
  end
  return wrk.format("GET", p)
end
