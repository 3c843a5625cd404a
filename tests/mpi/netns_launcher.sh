#!/bin/sh
# Hydra launcher for the network-namespace tests (tests/test_netns.py); a test device, not a user feature.
#
#   mpiexec -launcher ssh -launcher-exec tests/mpi/netns_launcher.sh -hosts NS1,NS2 ...
#
# Hydra calls its "ssh" as `LAUNCHER -x HOST "proxy" ARGS...` and expects the remote shell to run the
# words joined by spaces (the proxy path comes quoted). Here HOST is the name of a network namespace
# (tests/netns.py names each host after its namespace), so instead of logging in we enter it: its
# network stack, its /etc/hosts (ip netns exec bind-mounts /etc/netns/HOST/hosts) and, in a fresh UTS
# namespace, its host name -- which is what MPI_Get_processor_name reports to nstore.mpi.
[ "$1" = "-x" ] && shift
host=$1
shift
exec ip netns exec "$host" unshare --uts sh -c 'hostname "$0" && exec sh -c "$1"' "$host" "$*"
