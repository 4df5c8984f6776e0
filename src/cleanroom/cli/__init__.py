"""The ``cleanroom`` command line: a thin layer over the library."""
