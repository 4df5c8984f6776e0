"""Code that runs INSIDE the TEE: the Attester and the Workers.

It reaches its platform only through :class:`cleanroom.tee.platform.EnclavePlatform`
and is listed among the trusted files of the measured enclave images
(:mod:`cleanroom.tee.measure`), so changing it changes a measurement.
"""
