"""A small synchronous client for lightd's HTTP API, for example::

    from lightd.client import Client
    with Client("http://127.0.0.1:8070", token) as lightd:
        port = lightd.claim(protocol="both")[0]
        for event in lightd.events():  # every change to the pool, as it happens
            print(event.id, event.type, event.data)

Every call raises ClientError for an error answer (status 0: lightd could not be reached).
"""

from lightd.client._client import Client, ClientError
from lightd.client._events import Event

__all__ = ["Client", "ClientError", "Event"]
