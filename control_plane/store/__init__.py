"""The control plane's state: tables, engine, change notification and the xDS snapshot."""
