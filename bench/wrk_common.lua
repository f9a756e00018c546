-- What the wrk scripts of bench/ share: thread numbers, reading a list file, and the one
-- machine-readable result line the run scripts parse. A script loads it first with
--
--   dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "../wrk_common.lua")
--
-- setup() numbers the threads: each thread's script sees its own global `tid` (0, 1, ...).
--
-- done() prints:
--   WRK_RESULT requests=N duration_us=D rps=R p50_us=A p90_us=B p99_us=C max_us=M
--              non2xx=S connect_err=.. read_err=.. write_err=.. timeouts=..

local next_tid = 0

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
end

-- The non-empty lines of `path` (none without a path).
function read_lines(path)
   local lines = {}
   if path then
      for line in io.lines(path) do
         if #line > 0 then table.insert(lines, line) end
      end
   end
   return lines
end

function done(summary, latency, requests)
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      "WRK_RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d non2xx=%d connect_err=%d read_err=%d write_err=%d timeouts=%d\n",
      summary.requests, summary.duration, summary.requests / secs,
      math.floor(latency:percentile(50)), math.floor(latency:percentile(90)),
      math.floor(latency:percentile(99)), math.floor(latency.max),
      e.status, e.connect, e.read, e.write, e.timeout))
end
