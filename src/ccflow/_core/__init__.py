"""The IO-free core: no sockets, no clock reads, no logging on hot paths.

Everything here takes data and ``now`` (Unix seconds, a float) and returns frozen values and
decisions; the faces in ``ccflow.client``, ``ccflow.jwks`` and ``ccflow.starlette`` do the
waiting, the sockets and the clock.
"""
