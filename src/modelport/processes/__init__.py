"""`server.processes: N`: N gateway processes on one port (SO_REUSEPORT), one machine.

The process the user started (the primary) is the only one that starts, watches and
restarts the local workers, loads and unloads models and reloads the config. It starts
the other N-1 (followers: `modelport serve` again, with the control address and secret
in their environment), restarts one that dies, replaces them after a reload and stops
them with itself. A follower serves the same routes on the same port and relays to the
primary's workers: every 0.25 s it tells the primary which models it is using and
learns the table of local replicas (address, per-start secret, state, pid) in return
(wire.py); loads, unloads and reloads it is asked for are done by the primary
(follower.py). The primary's side of that channel is a small HTTP server on a random
loopback port, behind a secret that only its children know (control.py).
"""
