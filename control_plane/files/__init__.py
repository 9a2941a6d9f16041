"""The files service: ``/v1/files`` stored by the gateway, not by a provider.

One uploaded file serves every provider (and, later, batches), so the gateway keeps it:
the bytes in object storage (a local directory by default, S3-compatible storage in
production: ``storage.py``), the metadata in the control plane's store
(``StoredFile``). It is a small FastAPI application on its own port
(``INFERY_FILES_PORT``), started beside the control plane (``python -m control_plane.files``).

Only Envoy talks to it, over mutual TLS with the data plane's client certificate, and
only for requests ext_proc has authenticated: ext_proc checks the ``inf_`` key in the
headers, asserts the caller's workspace in a signed header
(proto/infery_proto/identity_assertion.py) and lets Envoy stream the body here without
reading it (ext_proc/endpoints/files.py). Uploads are parsed as they arrive and written to
storage chunk by chunk; downloads are streamed: no file is ever held whole in memory.
"""
