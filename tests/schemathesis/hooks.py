"""schemathesis hooks for troupe's run (tests/api/openapi.rs).

- A tus body: schemathesis serialises only the media types it knows; a tus PATCH (and a
  POST /files/ with creation-with-upload) carries `application/offset+octet-stream`, raw bytes.
- One `ast.parse` at a time: CPython 3.11 before 3.11.8 keeps the AST constructor's recursion
  depth per interpreter, not per thread (python/cpython#106905), so with two workers
  Hypothesis' concurrent parses (describing strategies) fail at random with "AST constructor
  recursion depth mismatch", an error of the tool, not of the server.
"""

import ast
import threading

import schemathesis
from hypothesis import strategies as st

schemathesis.openapi.media_type("application/offset+octet-stream", st.binary(max_size=4096))

_parse = ast.parse
_parsing = threading.Lock()


def _serialised_parse(*args, **kwargs):
    with _parsing:
        return _parse(*args, **kwargs)


ast.parse = _serialised_parse
