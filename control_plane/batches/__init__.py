"""The Batch API (``/v1/batches``) for every model, executed through the gateway's own data plane.

- ``api.py``: ``POST/GET /v1/batches``, ``GET /v1/batches/{id}``, ``POST .../cancel`` in
  OpenAI's shapes, served by the files service (same port, same signed identity from
  ext_proc, same storage for the input and output files: control_plane/files/).
- ``records.py``: the ``batches`` rows and the batch object; ``lines.py``: the
  ``batch_lines`` rows and how workers claim them (``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL, one conditional UPDATE on SQLite) without ever taking one twice.
- ``validation.py``: an input file read line by line before any work (OpenAI's
  ``errors`` list with line numbers; a bad file fails the batch and charges nothing).
- ``worker.py`` (``python -m control_plane.batches``): validates, sends each line through
  the Envoy listener as a request of the batch's key (with a credential of its own that
  only ext_proc accepts: infery_proto/batch_assertion.py), finalizes with output and error
  files. Any number of workers share the work; all state is in the store, so a worker or
  control plane killed mid-batch loses no line and, with the line's idempotency key, charges
  none twice.
"""
