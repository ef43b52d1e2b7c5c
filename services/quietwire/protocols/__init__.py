"""Sans-I/O protocol code: bytes and time in, bytes and events out.

Nothing here opens a socket, starts a task, talks to Redis or configures
logging; the services own the I/O. Nothing here imports a service.
"""
