-- wrk script for bench/sessions/run.
--
--   wrk -s sessions.lua URL -- MODE IDS_FILE [API_KEY]
--
-- MODE: get   GET  /v1/sessions/<id>     ids round-robin over IDS_FILE
--       patch PATCH /v1/sessions/<id>    {"data":{"k<i mod 64>":n}} (i = per-thread request
--             number, n unique), ids round-robin; data stays <= 64 small keys per session
--       post  POST /v1/sessions          {"user_id":"bench-<t>-<i>","data":{"n":n}}
--       churn create/revoke pairs: POST /v1/sessions, then DELETE /v1/sessions/<the new id>
--             (each thread revokes what it created, as soon as the create answered); a new
--             user per pair, or with a 4th argument U > 0 one of U returning users
-- With API_KEY every request carries `Authorization: Bearer API_KEY` (servers not in open mode).
-- Each thread starts at a different offset in the id list (half the list apart with -t2), so
-- concurrent requests spread over the sessions instead of queueing on one session's lock.
-- The hello-world server answers any path, so it runs the same `get` script (same
-- client-side cost as the sessiond GET runs).
--
-- setup() and done() (the WRK_RESULT line) are bench/wrk_common.lua's.

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "../wrk_common.lua")

local mode, ids, n_ids, counter, offset, headers, get_headers, users

function init(args)
   mode = args[1] or "get"
   local file = args[2]
   if file == "" then file = nil end
   ids = read_lines(file)
   n_ids = #ids
   if mode ~= "post" and mode ~= "churn" and n_ids == 0 then
      error("no ids in " .. tostring(file))
   end
   -- With -t2 the two threads start half the list apart (more threads wrap around).
   offset = (tid * math.floor(n_ids / 2)) % math.max(n_ids, 1)
   counter = 0
   users = tonumber(args[4] or "0") or 0
   headers = { ["Content-Type"] = "application/json" }
   get_headers = {}
   if args[3] and #args[3] > 0 then
      headers["Authorization"] = "Bearer " .. args[3]
      get_headers["Authorization"] = "Bearer " .. args[3]
   end
end

local function next_id()
   return ids[((offset + counter) % n_ids) + 1]
end

function request()
   counter = counter + 1
   local n = counter * 16 + tid -- unique per request across threads (<= 16 threads)
   if mode == "get" then
      return wrk.format("GET", "/v1/sessions/" .. next_id(), get_headers, nil)
   elseif mode == "patch" then
      local body = string.format('{"data":{"k%d":%d}}', counter % 64, n)
      return wrk.format("PATCH", "/v1/sessions/" .. next_id(), headers, body)
   elseif mode == "churn" then
      local id = table.remove(created)
      if id then
         return wrk.format("DELETE", "/v1/sessions/" .. id, get_headers, nil)
      end
      local user = string.format("churn-%d-%d", tid, counter)
      if users > 0 then
         user = string.format("churn-%d", n % users)
      end
      local body = string.format('{"user_id":"%s","data":{"n":%d}}', user, n)
      return wrk.format("POST", "/v1/sessions", headers, body)
   elseif mode == "post" then
      local body = string.format('{"user_id":"bench-%d-%d","data":{"n":%d}}', tid, counter, n)
      return wrk.format("POST", "/v1/sessions", headers, body)
   else
      error("unknown mode " .. tostring(mode))
   end
end

-- churn: remember each created id for the thread's next request.
created = {}
function response(status, headers, body)
   if mode == "churn" and status == 201 then
      local id = body:match('"id":"([^"]+)"')
      if id then table.insert(created, id) end
   end
end
