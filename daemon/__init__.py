"""The nstored side: the NetCDF storage engine, the server loop, journal and CLI."""
