"""Staging: from a downloaded image to a base a VM can use, atomically.

:mod:`.pipeline` verifies and decompresses in one streaming pass; :mod:`.files` and
:mod:`.lvm` are the two backends (immutable base files, or read-only logical
volumes), each with the same steps: stage under a temporary name, verify, publish
(rename and mark), and at start-up sweep leftovers of a crash.
"""
