-- wrk script: etcd v3 JSON gateway puts of 100-byte values over 100000 keys (base64, as the
-- gateway wants). Used by bench/compare.sh as the "replicated, strongly consistent" baseline.
local value = string.rep("x", 100)
local b64chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function base64(data)
  return ((data:gsub('.', function(x)
    local r, b = '', x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ '', '==', '=' })[#data % 3 + 1])
end
local encoded_value = base64(value)
local mode = os.getenv("ETCD_MODE") or "put"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local key = base64(string.format("key-%08d", math.random(0, 99999)))
  if mode == "range" then
    return wrk.format(nil, "/v3/kv/range", nil, '{"key":"' .. key .. '"}')
  end
  return wrk.format(nil, "/v3/kv/put", nil, '{"key":"' .. key .. '","value":"' .. encoded_value .. '"}')
end
done = function(summary, latency, requests)
  io.write(string.format("WRKRESULT %.1f %d %d %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), summary.errors.status + summary.errors.connect + summary.errors.timeout))
end
