"""The backends: one folder each, ``hilcore/backend/<name>/``.

A folder's ``__init__.py`` describes its backend (``BACKEND =
hilcore._dispatch.Backend(__name__, ...)``: where it runs, its own availability
check, the ops it implements and in which modules); :func:`hilcore._dispatch.discover`
finds the folders, so adding a backend edits nothing outside its folder.
This package imports nothing: a backend's modules (and its optional libraries)
are imported only when an op resolves to them. See docs/design.md, "The registry".
"""
