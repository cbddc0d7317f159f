"""A small synchronous client for lightd's HTTP API.

    from lightd.client import Client
    with Client("http://127.0.0.1:8070", token) as lightd:
        port = lightd.claim(protocol="both")[0]
"""

from lightd.client._client import Client, ClientError

__all__ = ["Client", "ClientError"]
