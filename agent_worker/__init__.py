"""superv's agent worker: one process per session.

It owns the session's PTY and agent process, its durable output log, its snapshots and
its socket, and it owns the formats of all of them.  The supervisor and the clients use
those formats through this package's modules; this package never imports ``supervisor``.
"""
