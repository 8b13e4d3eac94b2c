"""Node.js backends that crash and are restarted in turn, for compare.sh.

    python3 crashloop.py --script node_backend.js --ports P1 P2 P3 \
        --every 2 --down 1 --seconds 20

Starts one backend on each port and prints READY once all of them accept
connections. On SIGUSR1 the loop begins: every EVERY seconds one backend,
each in turn, is killed with SIGKILL, as a crashing worker dies, and
started again DOWN seconds later, as its supervisor restarts it, for
SECONDS seconds; then it prints DONE kills=N. SIGTERM (or the end of --hold)
stops every backend it started and exits.
"""
import argparse
import signal
import socket
import subprocess
import sys
import time


def accepting(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start(args, port, name):
    return subprocess.Popen(["node", args.script, str(port), name],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--script", required=True)
    parser.add_argument("--ports", type=int, nargs="+", required=True)
    parser.add_argument("--every", type=float, default=2.0)
    parser.add_argument("--down", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--hold", type=float, default=600.0,
                        help="longest time to run in all, in seconds")
    args = parser.parse_args()
    state = {"go": False, "stop": False}
    signal.signal(signal.SIGUSR1, lambda *_: state.update(go=True))
    signal.signal(signal.SIGTERM, lambda *_: state.update(stop=True))
    names = [f"node-{i + 1}" for i in range(len(args.ports))]
    procs = [start(args, p, n) for p, n in zip(args.ports, names)]
    ended = time.monotonic() + args.hold
    try:
        deadline = time.monotonic() + 20
        while not all(accepting(p) for p in args.ports):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                sys.exit("the Node.js backends did not start")
            time.sleep(0.05)
        print("READY", flush=True)
        while not state["go"] and not state["stop"] and time.monotonic() < ended:
            time.sleep(0.05)
        kills, loop_end = 0, time.monotonic() + args.seconds
        next_kill = time.monotonic() + args.every - args.down
        while not state["stop"] and time.monotonic() < min(loop_end, ended):
            now = time.monotonic()
            if now >= next_kill:
                victim = kills % len(procs)
                procs[victim].kill()
                procs[victim].wait()
                kills += 1
                time.sleep(args.down)
                procs[victim] = start(args, args.ports[victim], names[victim])
                next_kill = now + args.every
            time.sleep(0.01)
        print(f"DONE kills={kills}", flush=True)
        while not state["stop"] and time.monotonic() < ended:
            time.sleep(0.05)
    finally:
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
