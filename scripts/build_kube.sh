#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager and kube-scheduler v1.20.2 from Debian bookworm's
# `kubernetes` source package (it vendors the whole tree, so the build is offline), for the tests
# that run against a real API server. Idempotent: does nothing when the binaries are already in OUT.
# Usage: scripts/build_kube.sh [OUT]   (default ~/.cache/mlsysops/kube-1.20.2)
set -euo pipefail
OUT=${1:-${MLSYSOPS_KUBE_BIN:-$HOME/.cache/mlsysops/kube-1.20.2}}
BINS="kube-apiserver kube-controller-manager kube-scheduler"
have=1; for b in $BINS; do [ -x "$OUT/$b" ] || have=0; done
if [ $have = 1 ]; then echo "kube binaries present in $OUT"; exit 0; fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if ! ls /etc/apt/sources.list.d/*src* >/dev/null 2>&1; then
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
    | $SUDO tee /etc/apt/sources.list.d/debian-src.sources >/dev/null
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  golang-go dpkg-dev rsync jq golang-github-modern-go-reflect2-dev etcd-server >/dev/null
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
apt-get source -q --download-only kubernetes=1.20.5+really1.20.2-1.1+deb12u1 >/dev/null
dpkg-source -x --skip-patches kubernetes_1.20.5+really1.20.2-1.1+deb12u1.dsc src >/dev/null
cd src
# The vendored reflect2 v1.0.1 segfaults under Go >= 1.18 on the first custom-resource request;
# Debian's 1.0.2 works.
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
rm -f vendor/github.com/modern-go/reflect2/*_test.go
echo "building $BINS (about 4-5 minutes on 2 cores)..."
if ! env HOME="$WORK/home" make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" \
    >"$WORK/build.log" 2>&1; then
  tail -50 "$WORK/build.log"; exit 1
fi
mkdir -p "$OUT"
for b in $BINS; do cp "_output/bin/$b" "$OUT/"; done
echo "kube binaries built into $OUT"
