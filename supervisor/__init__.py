"""superv's supervisor (``superv daemon``) and its command line.

The supervisor is the control plane: it starts, watches, restarts and lists workers. It is
never in the data path: attaching talks to a session's worker directly.
"""
