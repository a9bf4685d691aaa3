-- wrk script for bench/prefork: GET /item/<id> with ids drawn uniformly
-- over the whole data set, so every worker reads all over the inherited heap.
--
--   wrk -t 2 -c 8 -d 20s --latency -s spread.lua http://127.0.0.1:PORT -- USERS [SEED [LIMIT]]
--
-- Each wrk thread has its own Lua state; setup() numbers them so their
-- random streams differ but are reproducible (LuaJIT's math.random is
-- deterministic for a given seed).  done() prints one machine-readable
-- line, "PREFORK_RESULT {json}", that run.py parses.

local n = 20000
local seed = 1
local threads = {}
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("tid", counter)
   table.insert(threads, thread)
end

function init(args)
   if args[1] then n = tonumber(args[1]) end
   if args[2] then seed = tonumber(args[2]) end
   math.randomseed(seed * 1000 + (tid or 0))
   -- Optional request budget per thread (run.py --requests): a response()
   -- callback exists only then (wrk parses bodies only if it exists; it
   -- checks after init), and stops the thread once the budget is served.
   local limit = tonumber(args[3] or "0")
   if limit > 0 then
      local served = 0
      response = function(status, headers, body)
         served = served + 1
         if served == limit then
            -- run.py interrupts wrk (SIGINT) once every thread said so,
            -- so wrk's duration, hence req/s, ends with the budget.
            io.write("PREFORK_THREAD_DONE\n")
            io.flush()
            wrk.thread:stop()
         end
      end
   end
end

function request()
   return wrk.format("GET", "/item/" .. math.random(0, n - 1))
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'PREFORK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
      '"lat_mean_us":%.1f,"lat_p50_us":%d,"lat_p99_us":%d,"lat_max_us":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency:percentile(50), latency:percentile(99),
      latency.max))
end
