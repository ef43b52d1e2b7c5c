"""``quietwire up``: the whole platform on one machine, for development and demos.

It sits beside the services, not inside them: it starts each service as a
child process, talks to them only through their health endpoints, and uses
the signaling user store to create the demo users.
"""
