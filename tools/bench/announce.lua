-- wrk script: announces from many distinct peers to a set of torrents (percent-encoded 20-byte hashes)
local hashes = {}
for t = 1, 16 do
  local h = ""
  for i = 1, 20 do h = h .. string.format("%%%02X", (t * 37 + i * 11) % 256) end
  hashes[t] = h
end
local n = 0
request = function()
  n = n + 1
  local peer = string.format("-WK0001-%012d", n)
  local path = string.format(
    "/announce?info_hash=%s&peer_id=%s&port=%d&uploaded=0&downloaded=0&left=%d&compact=1&numwant=50",
    hashes[(n % 16) + 1], peer, 1024 + (n % 60000), n % 2 * 1000)
  return wrk.format("GET", path)
end
