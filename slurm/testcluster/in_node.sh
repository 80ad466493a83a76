#!/usr/bin/env bash
# Runs CMD as cluster node NAME: own host name, and an /etc/hosts that names every node, so that
# `hostname` and the node list resolve inside jobs as on a real cluster (torch.distributed's
# MASTER_ADDR is the first node's name). Must run in fresh UTS and mount namespaces:
#   unshare --uts --mount -- in_node.sh NAME HOSTS_FILE CMD...
set -euo pipefail
hostname "$1"
mount --bind "$2" /etc/hosts
shift 2
exec "$@"
