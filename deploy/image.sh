#!/usr/bin/env bash
# Builds a small image of berth FROM scratch (deploy/Dockerfile): the binary,
# exactly the shared libraries it links and the dynamic loader, each at the
# path ldd names, and the host's CA certificates (ACME talks HTTPS).
# No registry, no network: the build only COPYs.
#
#   deploy/image.sh [BINARY] [IMAGE]    # defaults: target/dist/berth berth:latest
#   make image [IMAGE=berth:dev]        # builds the binary first (make release)
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/dist/berth}
image=${2:-berth:latest}
ca=${CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}

die() { echo "image: $*" >&2; exit 1; }
[ -x "$bin" ] || die "$bin is missing: run make release"
[ -r "$ca" ] || die "$ca is missing: install the ca-certificates package"
command -v ldd >/dev/null || die "ldd is missing (package libc-bin)"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/etc/berth" \
    "$root/var/lib/berth" "$root/usr/share/doc/berth" "$root/tmp"
chmod 1777 "$root/tmp" # std::env::temp_dir(): Pingora's pid and upgrade socket paths
install -m 0755 "$bin" "$root/usr/local/bin/berth"
install -m 0644 "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
install -m 0644 LICENSE "$root/usr/share/doc/berth/LICENSE"
# Docker provides /etc/hosts and /etc/resolv.conf; read them in that order
# (glibc 2.34 and later have the files and dns sources built in).
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"

# Every "name => /path (addr)" and the loader's "/path (addr)"; linux-vdso has
# no file. A library ldd cannot find stops the build.
libs=$(ldd "$bin" 2>&1) || case $libs in
    *"not a dynamic executable"* | *"statically linked"*) libs="" ;;
    *) die "ldd $bin: $libs" ;;
esac
if grep -q "not found" <<<"$libs"; then die "ldd $bin: $libs"; fi
paths=$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$libs")
for lib in $paths; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib" # the file itself, not the symlink
done

version=$("$bin" --version 2>/dev/null | awk '{ print $2; exit }') || true
echo "image: $image from $bin (berth ${version:-?}) with:" $paths
cp deploy/Dockerfile "$ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build --network none -q \
    --label "org.opencontainers.image.version=${version:-unknown}" \
    -t "$image" "$ctx" >/dev/null
docker image ls "$image" --format 'image: {{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}'
