"""Operations on the stored configuration, shared by the admin API and the config file.

Functions take an open session and never commit: the caller wraps a whole change in
`control_plane.store.changes.mutation` so it commits once and bumps the revision once.
"""
