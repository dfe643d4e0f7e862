-- Front (e): the rewrite as an Envoy Lua filter, what a user would write instead of the wasm
-- filter: pick the project by ?ns=, else the default registry; put it (and library/ for Docker
-- Hub's single-segment names) in front of /v2/ repository names and of token scopes; point a
-- 401's realm back at the client's host. Like the nginx recipe, it checks no name grammar.
local PROJECTS = {
  ["docker.io"] = "dockerhub-proxy",
  ["quay.io"] = "quay-proxy",
  ["ghcr.io"] = "ghcr-proxy",
  ["registry.k8s.io"] = "k8s-proxy",
}
local DEFAULT_REGISTRY = "docker.io"
-- /v2/<name>/<endpoint>; Lua patterns have no alternation, so one pattern per endpoint.
local ENDPOINTS = {
  "^/v2/(.+)/(manifests/[^/]+)$",
  "^/v2/(.+)/(blobs/uploads/.*)$",
  "^/v2/(.+)/(blobs/[^/]+)$",
  "^/v2/(.+)/(tags/list)$",
}

-- The query without its ns parameter, and the ns value.
local function take_ns(query)
  local ns
  local kept = {}
  for pair in query:gmatch("[^&]+") do
    local value = pair:match("^ns=(.*)$")
    if value then ns = value else kept[#kept + 1] = pair end
  end
  return table.concat(kept, "&"), ns
end

local function harbor_name(registry, name)
  if registry == "docker.io" and not name:find("/", 1, true) then
    name = "library/" .. name
  end
  return PROJECTS[registry] .. "/" .. name
end

local function with_query(path, query)
  if query == "" then return path end
  return path .. "?" .. query
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local full_path = headers:get(":path")
  local path, query = full_path:match("^([^?]*)%??(.*)$")
  local kept, ns = take_ns(query)
  local registry = ns or DEFAULT_REGISTRY
  if PROJECTS[registry] == nil then
    handle:respond({[":status"] = "404", ["content-type"] = "application/json"},
      '{"errors":[{"code":"NAME_UNKNOWN","message":"registry not served by this mirror"}]}')
    return
  end
  local metadata = handle:streamInfo():dynamicMetadata()
  metadata:set("harbor_rewrite", "authority", headers:get(":authority"))
  metadata:set("harbor_rewrite", "registry", registry)
  if path == "/service/token" then
    -- scope=repository%3A<name>%3A<actions> (docker, containers/image) or with plain colons.
    local rewritten = kept:gsub("scope=repository%%3[Aa](.-)%%3[Aa]", function(name)
      local mapped = harbor_name(registry, (name:gsub("%%2[Ff]", "/")))
      return "scope=repository%3A" .. mapped:gsub("/", "%%2F") .. "%3A"
    end)
    rewritten = rewritten:gsub("scope=repository:([^:&]*):", function(name)
      return "scope=repository:" .. harbor_name(registry, name) .. ":"
    end)
    headers:replace(":path", with_query(path, rewritten))
    return
  end
  for _, shape in ipairs(ENDPOINTS) do
    local name, endpoint = path:match(shape)
    if name ~= nil then
      headers:replace(":path", with_query("/v2/" .. harbor_name(registry, name) .. "/" .. endpoint, kept))
      return
    end
  end
end

function envoy_on_response(handle)
  local headers = handle:headers()
  if headers:get(":status") ~= "401" then return end
  local challenge = headers:get("www-authenticate")
  if challenge == nil then return end
  local metadata = handle:streamInfo():dynamicMetadata():get("harbor_rewrite")
  if metadata == nil then return end
  local realm = "http://" .. metadata.authority .. "/service/token?ns=" .. metadata.registry
  headers:replace("www-authenticate", (challenge:gsub('realm="[^"]*"', 'realm="' .. realm .. '"')))
end
