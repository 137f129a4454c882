"""Parquet in and out: what an upload sends, and what an export is read into.

pyarrow and pandas are optional (``pip install tinydevcrm[pyarrow]`` or ``[pandas]``): they are
imported only when a table or a frame is actually passed or asked for.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import IO, TYPE_CHECKING, Any, Callable, Union

if TYPE_CHECKING:
    import pandas
    import pyarrow

#: What an upload takes: a path to a Parquet file, Parquet bytes, a ``pyarrow.Table`` or a
#: ``pandas.DataFrame``.
UploadData = Union[str, "os.PathLike[str]", bytes, "pyarrow.Table", "pandas.DataFrame"]

#: Frames and tables up to this size are written to memory, larger ones to a temporary file.
SPOOL_BYTES = 64 * 1024 * 1024


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401  (the submodule is what is used)
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError(
            "pyarrow is needed for pyarrow tables and pandas DataFrames: "
            "pip install 'tinydevcrm[pyarrow]' (or '[pandas]')"
        ) from e
    return pyarrow


class Payload:
    """A Parquet body that can be sent more than once (a retry after a token refresh)."""

    def __init__(
        self,
        filename: str,
        opener: Callable[[], IO[bytes]],
        owned: bool,
        cleanup: Callable[[], None],
    ) -> None:
        self.filename = filename
        self._opener = opener
        self._owned = owned
        self._cleanup = cleanup

    def open(self) -> IO[bytes]:
        """The body from its start, for one attempt; hand it back to :meth:`done`."""
        return self._opener()

    def done(self, body: IO[bytes]) -> None:
        if self._owned:
            body.close()

    def close(self) -> None:
        self._cleanup()


def payload(data: UploadData, name: str) -> Payload:
    """The Parquet file for ``data``, written once (frames and tables) or opened per attempt."""
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if not os.path.isfile(path):
            raise FileNotFoundError(path)
        return Payload(os.path.basename(path), lambda: open(path, "rb"), True, lambda: None)
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        return Payload(f"{name}.parquet", lambda: io.BytesIO(raw), True, lambda: None)
    table = to_arrow(data)
    pq = _pyarrow().parquet
    # In memory while small, on disk beyond: a large frame is not held twice in RAM.
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    pq.write_table(table, spool)

    def rewind() -> IO[bytes]:
        spool.seek(0)
        return spool

    return Payload(f"{name}.parquet", rewind, False, spool.close)


def to_arrow(data: Any) -> "pyarrow.Table":
    """A ``pyarrow.Table`` from a table or a DataFrame (the DataFrame's index is left out)."""
    pa = _pyarrow()
    if isinstance(data, pa.Table):
        return data
    module = type(data).__module__
    if module.startswith("pandas") and type(data).__name__ == "DataFrame":
        return pa.Table.from_pandas(data, preserve_index=False)
    raise TypeError(
        "upload data must be a path, Parquet bytes, a pyarrow.Table or a pandas.DataFrame, "
        f"not {type(data).__name__}"
    )


def read_parquet(content: bytes) -> "pyarrow.Table":
    """The table of a Parquet export."""
    return _pyarrow().parquet.read_table(io.BytesIO(content))
