"""Wire format shared by the nstore client and the nstored daemon.

Everything here is importable without netCDF4; pint is imported lazily, only
when a unit is actually met.
"""

PROTOCOL_VERSION = 1
