"""Sluice benches: what the gateway costs, side by side with a naive baseline in the same run.

`make bench` (= `python -m bench`) starts a fake upstream, the baseline pass-through proxy and the
gateway, loads each with wrk (or the asyncio load client when wrk is missing), and reports
requests/s, latency, proxy CPU per request, TTFT and peak RSS, with ratios against the baseline;
and a chaos run (three upstreams behind one model, one throttling, one dying) against the plain
single-target path of the same gateway (bench/chaos.py).
"""
