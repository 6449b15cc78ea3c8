"""What a rank says when another rank of its run died (killed, out of memory, a crash): which rank, where that can be
known, instead of the collective's traceback.

A rank whose peer process has ended fails in its next collective: gloo raises a RuntimeError ("Connection reset by
peer", "Connection closed by peer"), NCCL a DistBackendError ("remote process exited"). The launcher then stops
every rank; each survivor says in one line which rank died and how the run continues. Which rank: every rank's
(host, pid) is gathered once at start-up, and a survivor checks the processes of its own host (those of other hosts
cannot be checked from here).
"""
import os
import re
import socket
import time

import torch.distributed as dist

import utils

PEERS = []  # (host name, pid) of every rank, by rank; empty in a one-rank run
PEER_DEATH = re.compile(r"Connection (?:reset|closed) by peer|remote process exited|Broken pipe|"
                        r"Connection refused|NCCL communicator was aborted")


def record_peers():
    """Gather every rank's (host name, pid) into PEERS: one all_gather at start-up, after the process group is up."""
    PEERS[:] = utils.gather_objects((socket.gethostname(), os.getpid())) if utils.world_size() > 1 else []


def is_peer_death(err):
    """Whether `err` is a collective failing because another rank's process ended (see the module's docstring)."""
    backend_error = getattr(dist, "DistBackendError", RuntimeError)
    return (utils.world_size() > 1 and isinstance(err, (RuntimeError, backend_error))
            and bool(PEER_DEATH.search(str(err))))


def dead_ranks(wait_s=2.0):
    """The ranks of this host whose process is gone. A dying process may still be closing its sockets when the
    survivors' collective fails, so look again for up to `wait_s` seconds before answering none."""
    from checkpointing import process_is_alive
    host, me = socket.gethostname(), os.getpid()
    deadline = time.monotonic() + wait_s
    while True:
        dead = [rank for rank, (peer_host, pid) in enumerate(PEERS)
                if peer_host == host and pid != me and not process_is_alive(pid)]
        if dead or time.monotonic() >= deadline:
            return dead
        time.sleep(0.1)


def peer_death_message(err):
    """The first half of the survivor's one line: which rank died (or that some peer process did) and that this
    rank stops too; the caller adds how to continue."""
    dead = dead_ranks()
    if dead:
        who = ", ".join(f"rank {rank} (pid {PEERS[rank][1]})" for rank in dead)
        return f"{who} of this run died, so rank {utils.rank()} stops too"
    reason = PEER_DEATH.search(str(err)).group(0)
    return f"a peer process of this run died ({reason} in a collective), so rank {utils.rank()} stops too"
