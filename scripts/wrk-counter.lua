-- wrk script: POST /Counter/k<i>/add with body 1 over KEEL_KEYS keys (default 100),
-- each connection walking the keys from its own random start.
local keys = tonumber(os.getenv("KEEL_KEYS") or "100")
local counter = 0
function init(args)
  counter = math.random(0, keys - 1)
end
function request()
  counter = (counter + 1) % keys
  return wrk.format("POST", "/Counter/k" .. counter .. "/add", {["Content-Type"] = "application/json"}, "1")
end
