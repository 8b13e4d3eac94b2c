"""Numbers for compare.sh: percentiles of an h2load log, grpc_bench's
report, and the final tables.

    python3 report.py h2load LOG       -> "ok p50_us p99_us p999_us" (2xx answers only)
    python3 report.py grpc OUT         -> "ok errors calls_per_s p50_us p99_us backends"
    python3 report.py table RESULTS --rate 5000 ...   -> markdown on stdout

RESULTS has one measurement a line: metric, target, round, value and an
optional flag (why the run is suspect), tab-separated.
"""
import argparse
import collections
import json
import math
import statistics
import sys

TARGETS = ["direct", "switchyard", "nginx", "haproxy"]
HEADS = {"direct": "direct (no proxy)", "switchyard": "Switchyard",
         "nginx": "nginx", "haproxy": "HAProxy"}
SLOW_TARGETS = ["switchyard-rr", "switchyard-lc", "switchyard-ll", "nginx-lc", "haproxy-lc"]
SLOW_HEADS = {"switchyard-rr": "Switchyard round_robin",
              "switchyard-lc": "Switchyard least_connections",
              "switchyard-ll": "Switchyard least_latency",
              "nginx-lc": "nginx least_conn", "haproxy-lc": "HAProxy leastconn"}
CRASH_TARGETS = ["switchyard-lc-checks", "switchyard-rr-checks", "switchyard-lc-passive",
                 "nginx-lc-checks", "haproxy-lc-checks"]
CRASH_HEADS = {"switchyard-lc-checks": "Switchyard least_connections, TCP checks",
               "switchyard-rr-checks": "Switchyard round_robin, TCP checks",
               "switchyard-lc-passive": "Switchyard least_connections, passive only",
               "nginx-lc-checks": "nginx least_conn, max_fails=1 fail_timeout=2s",
               "haproxy-lc-checks": "HAProxy leastconn, checks, retries 3, redispatch"}

TLS_TARGETS = ["switchyard", "nginx", "haproxy"]

LOG_TARGETS = ["sw-log-off", "sw-log-json"]
LOG_HEADS = {"sw-log-off": "Switchyard, access log off",
             "sw-log-json": "Switchyard, JSON access log to a file"}

NOTES = """How each row is measured:

- Requests/s and latency at {c} connections: wrk (one thread) on a fresh proxy, after a warm-up run; p50 and p99 from wrk's histogram.
- Proxy CPU per request: utime + stime of the proxy's processes (nginx: master and workers) from /proc/PID/stat over the run, divided by the requests wrk completed.
- New backend connections: the backend nginx's stub_status `accepts` counter over the run. It counts from the end of the warm-up, so it includes backend connections that a proxy replaces after the warm-up's clients closed with requests in flight. For direct, it is the load tool's own connections.
- Fixed rate: h2load over HTTP/1.1, {r:,} req/s in all, after a warm-up run; latencies from its per-request log (nearest rank). A client sends its next request only after the last answer, so a target that cannot keep up sends fewer: under 97 % of the rate, or any failed request, marks the cell ⚠.
- {many:,} connections: wrk on a fresh proxy, no warm-up; peak RSS is VmHWM of the processes holding the connections (nginx: its workers) after the run.
- Idle connections: a Python client opens {idle:,} connections, sends one GET on each, reads the answer and holds them all; RSS (VmRSS, as above) on a fresh proxy before and one second after the last answer; per connection is the difference divided by {idle:,}.
- One slow backend: three backends, one of which answers after {ms} ms; h2load at a fixed rate as above.
- 2 threads unpinned: two worker threads (nginx: two workers), nothing pinned, the backends free to use every CPU; wrk as in the first row.
- Crash loop: three Node.js backends (one process each, on the load's CPU); every {every} s one of them, each in turn, is killed with SIGKILL and started again {down} s later. wrk ({cc} keep-alive connections, one thread) runs {cs} s from the first kill on; wrk never retries, so every non-2xx answer and every socket error is a failed request. Switchyard's TCP checks run every 1 s, one failure out and one pass in; HAProxy's checks likewise (`check inter 1s fall 1 rise 1`), with `retries 3`, `option redispatch` and `retry-on all-retryable-errors`; nginx has `max_fails=1 fail_timeout=2s` and its default retries (`proxy_next_upstream error timeout`).
- TLS: every proxy serves the same self-signed ECDSA P-256 certificate (openssl), TLS 1.2 and 1.3 with its library's defaults (Switchyard: rustls with ring; nginx and HAProxy: OpenSSL), ALPN h2 and http/1.1; backends plain HTTP/1.1. Keep-alive: wrk over https as in the first row (one handshake per connection). Handshakes: wrk with `Connection: close` on {hs} connections, so every request is a new connection and a full handshake (wrk resumes no session). HTTP/2: h2load, {h2c} connections with {h2s} concurrent streams each, ALPN h2 checked; CPU per request as in the first row.
- Access log: Switchyard as in the first row, its access log off, then JSON to a file (`[log] access = "/tmp/.../access.json.log"`), one after the other in each round; lines written counts the file's lines after the run (the warm-up's and the readiness check's included), dropped is `switchyard_access_log_dropped_total` at its end.
- HTTP/2 without TLS: clients speak h2c by prior knowledge to the proxy (Switchyard `h2c = true`; nginx `listen ... http2`; HAProxy `bind ... proto h2`), which speaks HTTP/2 without TLS to two backends (Switchyard `protocol = "http2"`; HAProxy `server ... proto h2`; nginx `grpc_pass grpc://`, the only way nginx 1.22 passes a request to a backend over HTTP/2, which puts one request at a time on a backend connection where the others multiplex, so it keeps up to one idle connection per request in flight: `keepalive {h2n}`, 128 in the other rows). New backend connections as in the first row, counted from the end of the warm-up. Direct is one backend, no proxy. h2load: {h2c} connections × {h2s} streams to backend nginx servers that speak only HTTP/2 on those ports, so every answer came over it. gRPC: grpc_bench (a tonic client on one thread) makes unary calls over {h2c} connections with {h2s} calls in flight on each, to two tonic backends (one thread each, on the load's CPU); calls/s over the run, p50 and p99 of the calls that succeeded (nearest rank); a failed call, or a proxy that sent every call to one backend, marks the cell ⚠. CPU per request or call as in the first row."""


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def h2load_log(path):
    durations = []
    with open(path) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) >= 3 and cols[1].startswith("2"):
                durations.append(int(cols[2]))
    durations.sort()
    print(len(durations), *(percentile(durations, p) for p in (50, 99, 99.9)))


def grpc_report(path):
    """The numbers of grpc_bench's JSON line in `path`; exits 1 without one."""
    report = None
    with open(path) as f:
        for line in f:
            if line.startswith("{"):
                try:
                    report = json.loads(line)
                except ValueError:
                    continue
    if report is None:
        sys.exit(1)
    fields = [report["ok"], report["errors"], f"{report['calls_per_s']:.1f}",
              report["p50_us"] or 0, report["p99_us"] or 0, len(report["backends"])]
    print(*fields)


def load(path):
    values = collections.defaultdict(list)
    flags = []
    with open(path) as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 4:
                continue
            metric, target, rnd, value = cols[:4]
            try:
                values[(metric, target)].append(float(value))
            except ValueError:
                continue
            if len(cols) > 4 and cols[4]:
                flags.append((metric, target, rnd, cols[4]))
    return values, flags


def num(v):
    if math.isnan(v):
        return "n/a"
    a = abs(v)
    if v == int(v) and a < 1000:
        return str(int(v))
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(values, flagged):
    if not values:
        return "—"
    mark = " ⚠" if flagged else ""
    med = statistics.median(values)
    if len(values) == 1:
        return num(med) + mark
    return f"{num(med)} ({num(min(values))}–{num(max(values))}){mark}"


def ratio(values, num_target, den_target, metric):
    a, b = values.get((metric, num_target)), values.get((metric, den_target))
    if not a or not b or statistics.median(b) == 0:
        return "—"
    return f"{statistics.median(a) / statistics.median(b):.2f}×"


def table(rows, targets, heads, ratios, values, flagged, title=None):
    """Prints a markdown table of the rows measured, under `title`; nothing
    when no row was (a scenario left out by ONLY)."""
    out = ["| measure | better | " + " | ".join(heads[t] for t in targets) + " | "
           + " | ".join(label for label, _, _ in ratios) + " |",
           "|---|---|" + "---|" * (len(targets) + len(ratios))]
    for metric, label, better in rows:
        if not any((metric, t) in values for t in targets):
            continue
        cells = [cell(values.get((metric, t), []), (metric, t) in flagged) for t in targets]
        rats = [ratio(values, a, b, metric) for _, a, b in ratios]
        out.append(f"| {label} | {better} | " + " | ".join(cells) + " | " + " | ".join(rats) + " |")
    if len(out) == 2:
        return
    if title:
        print(title)
        print()
    print("\n".join(out))
    print()


def render(args):
    values, flags = load(args.results)
    flagged = {(m, t) for m, t, _, _ in flags}
    r, c, many, idle = args.rate, args.conns, args.many_conns, args.idle_conns
    rows = [
        ("rps64", f"requests/s, {c} keep-alive connections, 1 thread pinned", "higher"),
        ("p50_64", f"latency p50 at {c} connections (ms)", "lower"),
        ("p99_64", f"latency p99 at {c} connections (ms)", "lower"),
        ("cpu_us", f"proxy CPU per request at {c} connections (µs)", "lower"),
        ("churn64", f"new backend connections per run, {c} connections", "lower"),
        ("fixed_p50", f"latency p50 at a fixed {r:,} req/s (ms)", "lower"),
        ("fixed_p99", f"latency p99 at a fixed {r:,} req/s (ms)", "lower"),
        ("fixed_p999", f"latency p99.9 at a fixed {r:,} req/s (ms)", "lower"),
        ("fixed_rate", f"requests sent per second, fixed {r:,} req/s", "= target"),
        ("fixed_churn", f"new backend connections per run, fixed {r:,} req/s", "lower"),
        ("rps1000", f"requests/s, {many:,} connections", "higher"),
        ("hwm1000", f"peak RSS, {many:,} connections (MiB)", "lower"),
        ("churn1000", f"new backend connections per run, {many:,} connections, from a fresh start", "lower"),
        ("idle_before", "RSS before the idle connections (MiB)", "lower"),
        ("idle_with", f"RSS with {idle:,} idle keep-alive connections (MiB)", "lower"),
        ("idle_per_conn", "RSS per idle connection (KiB)", "lower"),
        ("rps_unpinned", f"requests/s, 2 threads unpinned, {c} connections", "higher"),
    ]
    ratios = [("Switchyard / nginx", "switchyard", "nginx"),
              ("Switchyard / HAProxy", "switchyard", "haproxy")]
    table(rows, TARGETS, HEADS, ratios, values, flagged)
    slow_rows = [
        ("slow_p50", "latency p50 (ms)", "lower"),
        ("slow_p99", "latency p99 (ms)", "lower"),
        ("slow_p999", "latency p99.9 (ms)", "lower"),
        ("slow_rate", "requests sent per second", "= target"),
        ("slow_churn", "new backend connections per run", "lower"),
    ]
    slow_ratios = [("Sw. round_robin / nginx", "switchyard-rr", "nginx-lc"),
                   ("Sw. round_robin / HAProxy", "switchyard-rr", "haproxy-lc"),
                   ("Sw. least_conn. / nginx", "switchyard-lc", "nginx-lc"),
                   ("Sw. least_conn. / HAProxy", "switchyard-lc", "haproxy-lc"),
                   ("Sw. least_latency / Sw. least_conn.", "switchyard-ll", "switchyard-lc")]
    table(slow_rows, SLOW_TARGETS, SLOW_HEADS, slow_ratios, values, flagged,
          f"One backend of three adds {args.slow_ms} ms; fixed {args.slow_rate:,} req/s "
          f"over {args.slow_conns} connections, 1 thread pinned:")
    crash_rows = [
        ("crash_failed", "failed requests", "lower"),
        ("crash_rps", "requests/s", "higher"),
        ("crash_kills", "backend kills in the run", "= all"),
    ]
    crash_ratios = [("Sw. least_conn. / nginx", "switchyard-lc-checks", "nginx-lc-checks"),
                    ("Sw. least_conn. / HAProxy", "switchyard-lc-checks", "haproxy-lc-checks")]
    table(crash_rows, CRASH_TARGETS, CRASH_HEADS, crash_ratios, values, flagged,
          f"Crash-looping backends: every {args.crash_every} s one of three Node.js backends, "
          f"each in turn, is killed and restarted {args.crash_down} s later; "
          f"{args.crash_conns} clients that never retry, {args.crash_secs} s, 1 thread pinned:")
    tls_rows = [
        ("tls_rps", f"requests/s, {c} keep-alive connections", "higher"),
        ("tls_p99", f"latency p99 at {c} connections (ms)", "lower"),
        ("tls_cpu_us", "proxy CPU per request (µs)", "lower"),
        ("hs_rps", f"new TLS connections per second ({args.hs_conns} clients)", "higher"),
        ("hs_cpu_us", "proxy CPU per new connection (µs)", "lower"),
        ("h2_rps", f"HTTP/2 requests/s, {args.h2_conns} connections × {args.h2_streams} streams", "higher"),
        ("h2_cpu_us", "proxy CPU per HTTP/2 request (µs)", "lower"),
    ]
    table(tls_rows, TLS_TARGETS, HEADS, ratios, values, flagged,
          "Over TLS, 1 thread pinned, backends plain HTTP/1.1:")
    h2c_rows = [
        ("h2c_rps", f"HTTP/2 requests/s, {args.h2_conns} connections × {args.h2_streams} streams", "higher"),
        ("h2c_cpu_us", "proxy CPU per HTTP/2 request (µs)", "lower"),
        ("h2c_churn", "new backend connections per run", "lower"),
        ("grpc_rps", f"gRPC unary calls/s, {args.h2_conns} connections × {args.h2_streams} calls", "higher"),
        ("grpc_p50", "gRPC call latency p50 (ms)", "lower"),
        ("grpc_p99", "gRPC call latency p99 (ms)", "lower"),
        ("grpc_cpu_us", "proxy CPU per gRPC call (µs)", "lower"),
    ]
    table(h2c_rows, TARGETS, HEADS, ratios, values, flagged,
          "HTTP/2 without TLS on both sides (h2c by prior knowledge), 1 thread pinned, "
          "backends HTTP/2 (nginx: grpc_pass):")
    log_rows = [
        ("rps64", f"requests/s, {c} keep-alive connections", "higher"),
        ("p50_64", f"latency p50 at {c} connections (ms)", "lower"),
        ("p99_64", f"latency p99 at {c} connections (ms)", "lower"),
        ("cpu_us", "proxy CPU per request (µs)", "lower"),
        ("log_lines", "access log lines written", "= requests"),
        ("log_dropped", "access log lines dropped", "lower"),
    ]
    table(log_rows, LOG_TARGETS, LOG_HEADS, [("JSON / off", "sw-log-json", "sw-log-off")],
          values, flagged, "The access log's cost, 1 thread pinned (the writer thread on the same CPU):")
    print(NOTES.format(c=c, r=r, many=many, idle=idle, ms=args.slow_ms, every=args.crash_every,
                       down=args.crash_down, cc=args.crash_conns, cs=args.crash_secs,
                       hs=args.hs_conns, h2c=args.h2_conns, h2s=args.h2_streams,
                       h2n=max(128, args.h2_conns * args.h2_streams)))
    if flags:
        print()
        print("⚠ suspect runs:")
        print()
        runs = collections.defaultdict(list)
        for metric, target, rnd, why in flags:
            runs[(rnd, target, why)].append(metric)
        for (rnd, target, why), metrics in runs.items():
            print(f"- round {rnd}, {target} ({', '.join(metrics)}): {why}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "h2load":
        h2load_log(sys.argv[2])
        return
    if len(sys.argv) == 3 and sys.argv[1] == "grpc":
        grpc_report(sys.argv[2])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("cmd", choices=["table"])
    parser.add_argument("results")
    for name in ("rate", "conns", "many-conns", "idle-conns", "slow-ms",
                 "slow-rate", "slow-conns", "crash-secs", "crash-conns", "crash-every",
                 "crash-down", "hs-conns", "h2-conns", "h2-streams"):
        parser.add_argument("--" + name, type=int, required=True)
    render(parser.parse_args())


if __name__ == "__main__":
    main()
