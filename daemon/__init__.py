"""The nstored side: the NetCDF storage engine, the server loop, journal and CLI."""

import logging as _logging

from .logsafe import install as _install

_install(_logging.getLogger("nstored"))  # request data in log lines is escaped (no forged lines)
