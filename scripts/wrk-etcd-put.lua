-- wrk script: etcd's JSON gateway, POST /v3/kv/put of key k<i> over KEEL_KEYS keys
-- (default 100), value "1": a blind durable write, the etcd side of compare-etcd.sh.
local keys = tonumber(os.getenv("KEEL_KEYS") or "100")
local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end
local bodies = {}
for i = 0, keys - 1 do
  bodies[i] = '{"key":"' .. b64("k" .. i) .. '","value":"' .. b64("1") .. '"}'
end
local counter = 0
function init(args)
  counter = math.random(0, keys - 1)
end
function request()
  counter = (counter + 1) % keys
  return wrk.format("POST", "/v3/kv/put", { ["Content-Type"] = "application/json" }, bodies[counter])
end
