-- wrk script for ./build.sh bench: cycles through the request shapes in a file, one per line
-- ("METHOD PATH"), each connection on its own, and prints a JSON summary when done.
--   wrk ... -s requests.lua URL -- SHAPES_FILE HOST
local shapes = {}
local next_shape = 0

local ACCEPT = "application/vnd.docker.distribution.manifest.v2+json, "
  .. "application/vnd.docker.distribution.manifest.list.v2+json, "
  .. "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"

function init(args)
  local file = assert(io.open(args[1]), "cannot open the shapes file " .. tostring(args[1]))
  for line in file:lines() do
    local method, path = line:match("^(%u+) (%S+)$")
    if method then
      local headers = { ["Host"] = args[2], ["User-Agent"] = "containerd/1.6.20", ["Accept"] = ACCEPT }
      shapes[#shapes + 1] = wrk.format(method, path, headers)
    end
  end
  file:close()
  assert(#shapes > 0, "no request shapes in " .. args[1])
end

function request()
  next_shape = next_shape % #shapes + 1
  return shapes[next_shape]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
