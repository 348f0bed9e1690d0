#!/bin/sh
# Builds the test backend image from Debian's busybox-static (no registry here).
set -eu
# Bumped when the image changes: the tests rebuild an image of another version.
IMAGE_VERSION=5
here=$(cd "$(dirname "$0")" && pwd)
# Tags: :1 (VERSION v1), :2 (VERSION v2), :broken (never passes /health),
# :500 (VERSION v3, healthy, its /cgi-bin/who answers 500).
repo=${1:-berth-test-web}
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "$busybox missing: apt-get install busybox-static" >&2; exit 1; }
ctx=$(mktemp -d)
err=$(mktemp)
trap 'rm -rf "$ctx" "$err"' EXIT
cp "$busybox" "$ctx/busybox"
cp "$here/Dockerfile" "$here/start.sh" "$here/who" "$here/auth" "$here/burn" "$ctx/"
build() {
    DOCKER_BUILDKIT=0 docker build -q --label berth-test.image=$IMAGE_VERSION -t "$1" "$ctx" >/dev/null 2>"$err" || { cat "$err" >&2; exit 1; }
    echo "built $1"
}
build "$repo:1"
echo 'ENV VERSION=v2' >> "$ctx/Dockerfile"
build "$repo:2"
echo 'ENV HEALTHY=0' >> "$ctx/Dockerfile"
build "$repo:broken"
printf 'ENV HEALTHY=1\nENV FAIL=1\nENV VERSION=v3\n' >> "$ctx/Dockerfile"
build "$repo:500"
