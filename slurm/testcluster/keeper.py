#!/usr/bin/env python3
"""Anchor of a test cluster's process tree: keeper.py PIDFILE CMD...

Daemons fork away from their parents (slurmd double-forks every slurmstepd), so left alone they end
up under init and nothing tells the cluster's processes apart from the machine's. The keeper makes
itself a child subreaper: every orphan of the cluster is re-parented to it, and stop.sh kills exactly
the keeper's descendants, by pid.

The caller's process waits until CMD (the launch script) has finished and exits with CMD's status;
the detached keeper stays behind, reaping, until the last process of the cluster is gone.
"""
import ctypes
import os
import sys

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>; the stdlib has no prctl binding, hence ctypes


def keep(pidfile: str, cmd: list[str], status_fd: int) -> int:
    os.setsid()  # a Ctrl-C meant for the caller must not reach the daemons
    # nor may they hold the caller's other pipes open (a CI runner would wait for their EOF)
    os.closerange(3, status_fd)
    os.closerange(status_fd + 1, os.sysconf("SC_OPEN_MAX"))
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"keeper.py: prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    tmp = f"{pidfile}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(tmp, pidfile)
    launcher = os.fork()
    if launcher == 0:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        try:
            os.execvp(cmd[0], cmd)
        except OSError as e:
            print(f"keeper.py: cannot run {cmd[0]}: {e.strerror}", file=sys.stderr)
        os._exit(127)
    while True:  # orphans that die while CMD runs are reaped here too
        pid, status = os.wait()
        if pid == launcher:
            rc = os.waitstatus_to_exitcode(status)
            break
    # Let go of the caller's stdout/stderr: a caller reading them through a pipe must see EOF.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    os.write(status_fd, bytes([rc if rc >= 0 else 1]))  # killed by a signal: 1
    os.close(status_fd)
    while True:
        try:
            os.wait()
        except ChildProcessError:  # the cluster's last process is gone
            return 0


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit("usage: keeper.py PIDFILE CMD...")
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.close(read_end)
        os._exit(keep(sys.argv[1], sys.argv[2:], write_end))
    os.close(write_end)
    status = os.read(read_end, 1)
    sys.exit(status[0] if status else 1)


if __name__ == "__main__":
    main()
