"""Python client for tinydevcrm: tables from Parquet, pyarrow and pandas, views, jobs, channels.

    from tinydevcrm import Client
    client = Client("http://localhost:8000")
    client.login("me@example.com", "password")
    client.tables.upload("calls", "sample.parquet")
    for event in client.listen(channel_id):
        print(event.id, event.type, event.data)

``AsyncClient`` does auth, JSON routes and ``listen`` for asyncio. A service holds an API key
instead of a session: ``Client(url, api_key="tdc_...")`` or ``Client.from_env()`` (``TDC_KEY``).
"""

from ._async import AsyncClient
from ._client import (
    Channels,
    Client,
    Columns,
    Filters,
    FilterValue,
    Jobs,
    Keys,
    Tables,
    Tokens,
    Views,
)
from ._data import UploadData
from ._errors import TinydevcrmConnectionError, TinydevcrmError
from ._sse import Event

__all__ = [
    "AsyncClient",
    "Channels",
    "Client",
    "Columns",
    "Event",
    "FilterValue",
    "Filters",
    "Jobs",
    "Keys",
    "Tables",
    "TinydevcrmConnectionError",
    "TinydevcrmError",
    "Tokens",
    "UploadData",
    "Views",
]

__version__ = "0.1.0"
