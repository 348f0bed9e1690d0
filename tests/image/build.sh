#!/bin/sh
# Builds the test backend image from Debian's busybox-static (no registry here).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-berth-test-web:1}
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "$busybox missing: apt-get install busybox-static" >&2; exit 1; }
ctx=$(mktemp -d)
err=$(mktemp)
trap 'rm -rf "$ctx" "$err"' EXIT
cp "$busybox" "$ctx/busybox"
cp "$here/Dockerfile" "$here/start.sh" "$here/who" "$ctx/"
DOCKER_BUILDKIT=0 docker build -q --label berth-test.image=1 -t "$tag" "$ctx" >/dev/null 2>"$err" || { cat "$err" >&2; exit 1; }
echo "built $tag"
