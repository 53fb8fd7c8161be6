"""What the mkflow tests share: real `proxkey` processes run in a scratch
directory W, checks counted, output files read back.

A test calls setup(PROXKEY, W) once W exists, then uses check/run/start/read/
wait_for; at the end (in a `finally`) `finish()` stops the processes, cleans
up, prints the count and gives the exit status.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import time

PK = None
W = None
failures = 0
checks = 0
procs = []


def setup(pk, workdir):
    global PK, W
    PK = os.path.abspath(pk)
    W = workdir


def check(ok, what):
    global failures, checks
    checks += 1
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures += 1
    return ok


def run(*args, ok=True, timeout=30):
    p = subprocess.run([PK, *args], cwd=W, capture_output=True, text=True, timeout=timeout)
    if ok and p.returncode != 0:
        print("command failed:", args, p.returncode, p.stdout, p.stderr, flush=True)
    return p


def free_port(kind=socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(*args, out=None, err=None):
    f = open(os.path.join(W, out), "w") if out else subprocess.DEVNULL
    e = open(os.path.join(W, err), "w") if err else subprocess.DEVNULL
    p = subprocess.Popen([PK, *args], cwd=W, stdout=f, stderr=e)
    procs.append(p)
    return p


def read(name):
    try:
        with open(os.path.join(W, name)) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def count(name, pattern):
    return len(re.findall(pattern, read(name), re.M))


def wait_for(name, pattern, n=1, secs=15.0, step=0.05):
    """True once `pattern` occurs n times in W/name, within secs."""
    end = time.time() + secs
    while time.time() < end:
        if count(name, pattern) >= n:
            return True
        time.sleep(step)
    return False


def finish():
    """Stops every process started (SIGTERM, then SIGKILL after 5 s), removes
    W unless a check failed, prints the count; returns the exit status."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
    if W and failures == 0:
        shutil.rmtree(W, ignore_errors=True)
    elif W:
        print("kept", W)
    print(f"{checks - failures} passed, {failures} failed")
    return 1 if failures else 0
