"""Admission: the one primitive for requests that wait for capacity.

`FairQueue` (fair_queue.py) counts a model's running slots and the requests waiting for
them, bounds both, refuses beyond them (429 with Retry-After) and orders the waiting ones
(priority classes with aging, fair share by tokens between keys; a single key is first
come, first served). Two thin adapters put it where requests wait:
- `ModelQueue` (model_queue.py), on the gateway's event loop: a model's queue in front of
  its replicas, dispatching with futures;
- `Admission` (threaded.py), for engines: a worker's requests waiting for a slot of its
  engine, from the event loop and from engine threads, under one lock.
"""
