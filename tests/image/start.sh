#!/bin/sh
# Like a well-behaved app: exit on SIGTERM (busybox httpd as PID 1 ignores it).
trap 'exit 0' TERM
mkdir -p /www
echo "${VERSION:-v1}" > /www/version
echo "$(hostname) ${VERSION:-v1}" > /www/index.html
sleep "${START_DELAY:-0}"
echo ok > /www/health
httpd -f -p "${PORT:-8080}" -h /www &
wait
