#!/bin/sh
# bootstrap.sh -- install what is missing (Debian packages) and build OpenDLU in place.
#
# Used by scripts/main.sh and scripts/test.sh, so either works first on a fresh Debian 12
# machine from a clean clone. Installs only packages that are absent; needs root or sudo
# for that. Not a packaging script: `make install` is separate.
set -eu
cd "$(dirname "$0")/.."

PKGS="build-essential autoconf automake libtool pkg-config
      libopenblas-dev libgsl-dev libcunit1-dev zlib1g-dev libinih-dev libjansson-dev libssl-dev
      libsystemc-dev libopenmpi-dev openmpi-bin gnuplot-nox python3
      dataset-fashion-mnist"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "bootstrap: installing:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

jobs=$(nproc 2>/dev/null || echo 2)
if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt configure ]; then
    autoreconf -fi
fi
if [ ! -f Makefile ] || [ configure -nt Makefile ]; then
    ./configure ${DLU_CONFIGURE_FLAGS:-}
fi
make -j"$jobs"
