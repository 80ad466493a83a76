#!/usr/bin/env bash
# The Debian packages the test suite needs beyond Python: SLURM + munge + MariaDB/slurmdbd (the local
# test cluster, slurm/testcluster/), iproute2 (its second node), Chromium (the report's rendering
# tests), make, python3-venv. Run by `make test` and `.ci/run`. As root it installs what is missing (apt-get update
# only then); otherwise it prints the one command to run and what the suite skips until then.
set -euo pipefail
packages=(make python3-venv slurmctld slurmd slurm-client munge slurmdbd mariadb-server iproute2 chromium)
command -v dpkg-query >/dev/null || { echo "setup: not Debian: install ${packages[*]} yourself; the SLURM and Chromium tests skip until then"; exit 0; }
missing=()
for p in "${packages[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) == 0 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    exit 0
fi
skips=()
[[ " ${missing[*]} " =~ \ (slurm|munge|mariadb) ]] && skips+=("the SLURM-cluster tests")
[[ " ${missing[*]} " == *" iproute2 "* ]] && skips+=("the 2-node SLURM test")
[[ " ${missing[*]} " == *" chromium "* ]] && skips+=("the Chromium report tests")
echo "setup: missing Debian packages; install them with:"
echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
summary=$(IFS=,; echo "${skips[*]:-nothing}")
echo "setup: skipped until then: ${summary//,/, }"
