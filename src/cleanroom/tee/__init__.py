"""Trusted execution environments behind one seam (see :mod:`cleanroom.tee.platform`)."""
